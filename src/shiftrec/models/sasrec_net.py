"""SASRec's nn.Module (imports torch: imported only when a SASRec net is built; see sasrec.py)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from shiftrec.models.layers import LN_EPS, TransformerBlock, init_embeddings, left_align
from shiftrec.models.repeat import repeat_gate
from shiftrec.models.torch_base import full_softmax_ce


class SASRecNet(nn.Module):
    """Item + learned position embedding, LayerNorm, dropout, causal post-LN blocks; scores are
    hidden @ item_emb.T. `cfg` is a models.sasrec.SASRecConfig."""

    def __init__(self, n_items: int, cfg: Any) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_items = n_items
        self.max_len = cfg.max_len
        self.repeat_fit: dict | None = None  # the repeat/explore gate (models.repeat), when on
        self.item_emb = nn.Embedding(n_items + 1, cfg.hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.hidden)
        self.ln = nn.LayerNorm(cfg.hidden, eps=LN_EPS)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([TransformerBlock(cfg.hidden, cfg.heads, cfg.inner, cfg.dropout,
                                                      cfg.attn_dropout) for _ in range(cfg.layers)])
        self.apply(init_embeddings)

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        """Left-aligned (B, W) item ids -> (B, W, hidden), causal."""
        w = seq.shape[1]
        pos = torch.arange(w, device=seq.device)
        x = self.drop(self.ln(self.item_emb(seq) + self.pos_emb(pos)[None]))
        for blk in self.blocks:
            x = blk(x)
        return x

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        seq, labels = batch["seq"], batch["labels"]
        h = self.encode(seq)
        m = labels > 0
        return full_softmax_ce(h[m], self.item_emb.weight[1:], labels[m] - 1)

    def query(self, seq: torch.Tensor) -> torch.Tensor:
        """(B, L) right-aligned histories -> (B, hidden) state after the last item; the
        scores are query(seq) @ item_emb.weight.T."""
        aligned, _, lens = left_align(seq, self.max_len)
        h = self.encode(aligned)
        return h[torch.arange(len(seq), device=seq.device), (lens - 1).clamp(min=0)]

    def score_all(self, seq: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
        scores = self.query(seq) @ self.item_emb.weight.T
        scores[:, 0] = float("-inf")
        if self.repeat_fit is not None:
            scores = repeat_gate(scores, seq[:, -self.max_len:], float(self.repeat_fit["share"]))
        return scores
