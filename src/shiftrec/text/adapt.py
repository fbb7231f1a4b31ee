"""Adapt a sentence encoder to shopping behaviour (pretraining the text side on source domains).

A generic sentence encoder places titles by what they say. Shoppers move between items by what
they buy next, which the encoder has never seen. `adapt_encoder` fine-tunes a
sentence-transformers model contrastively on *transition pairs* from source domains' training
sequences: the text of an item and the text of the item its buyer took next are pulled
together, the other next-items of the batch are pushed apart (in-batch negatives, both
directions, a batch's duplicates of the positive masked out). The result is an ordinary
sentence-transformers folder (safetensors weights), usable wherever an encoder is named, plus
`adapt.json` (base model and its fingerprint, sources, config, steps, held-out pair accuracy
before and after).

Long runs are cut into chunks of `chunk_steps`; each chunk ends with the folder written
atomically, and `resume=True` continues from it (the optimizer restarts each chunk; the pair
stream is seeded by the step count, so a resumed run draws the same pairs as an unbroken one).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shiftrec.data.splits import Seqs
from shiftrec.errors import ConfigError, InputError
from shiftrec.manifest import atomic_dir, read_json, write_json

ADAPT_FILE = "adapt.json"
_MAY_CHANGE = ("steps", "chunk_steps", "threads")  # a resumed run may go further, in other chunks


@dataclass(frozen=True)
class AdaptConfig:
    """Contrastive adaptation of a sentence encoder on transition pairs."""

    steps: int = 400  # optimizer steps in all (batch_size pairs each)
    batch_size: int = 64
    lr: float = 2e-5
    temperature: float = 0.05
    max_tokens: int = 32  # texts are cut to this many tokens while training
    freeze_layers: int = 2  # bottom transformer layers (and the token embeddings) kept frozen
    chunk_steps: int = 100  # the folder is written after every chunk (resumable)
    valid_pairs: int = 512  # held-out pairs: accuracy of picking the next item among them
    same_domain: bool = False  # each batch from one domain (negatives as hard as the positives)
    seed: int = 0
    threads: int = 0  # 0 = torch's default

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "max_tokens", "chunk_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"adapt config: {name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ConfigError("adapt config: batch_size must be >= 2 (in-batch negatives)")
        if not self.lr > 0 or not self.temperature > 0:
            raise ConfigError("adapt config: lr and temperature must be > 0")
        if self.freeze_layers < 0 or self.valid_pairs < 0 or self.threads < 0:
            raise ConfigError("adapt config: freeze_layers, valid_pairs and threads must be >= 0")


@dataclass
class PairDomain:
    """One source domain: texts of its items (entry i-1 = item index i) and its transitions
    as (n, 2) item indices (from, next)."""

    name: str
    texts: list[str]
    pairs: np.ndarray


def transition_pairs(train: Seqs, texts: Sequence[str] | None = None) -> np.ndarray:
    """(n, 2) int64 item indices (item, the next different item) over every training sequence.
    Repeats of the same item are skipped; with `texts`, so are pairs whose texts are equal or
    either text is empty (they teach nothing)."""
    items = np.asarray(train.items, np.int64)
    ptr = np.asarray(train.indptr, np.int64)
    if len(items) < 2:
        return np.zeros((0, 2), np.int64)
    same_user = np.ones(len(items) - 1, bool)
    same_user[ptr[1:-1] - 1] = False  # the last event of a user does not pair with the next user
    a, b = items[:-1], items[1:]
    keep = same_user & (a != b) & (a > 0) & (b > 0)
    out = np.stack([a[keep], b[keep]], 1)
    if texts is not None and len(out):
        t = np.asarray([""] + list(texts), dtype=object)
        ok = np.array([bool(x) and bool(y) and x != y for x, y in zip(t[out[:, 0]], t[out[:, 1]], strict=True)],
                      dtype=bool)
        out = out[ok]
    return out


def _draw(domains: list[PairDomain], n: int, rng: np.random.Generator, same_domain: bool = False
          ) -> tuple[list[str], list[str], np.ndarray]:
    """n pairs, domains drawn in proportion to the square root of their pair counts (large
    domains do not drown the small ones); with `same_domain` one domain for the whole batch.
    Returns anchor texts, positive texts and a positive key per pair (domain, item) for masking
    duplicates."""
    sizes = np.array([len(d.pairs) for d in domains], float)
    p = np.sqrt(sizes) / np.sqrt(sizes).sum()
    which = (np.full(n, rng.choice(len(domains), p=p)) if same_domain
             else rng.choice(len(domains), size=n, p=p))
    anchors, positives, keys = [], [], np.zeros(n, np.int64)
    for k, di in enumerate(which):
        d = domains[di]
        a, b = d.pairs[rng.integers(len(d.pairs))]
        anchors.append(d.texts[a - 1])
        positives.append(d.texts[b - 1])
        keys[k] = (int(di) << 32) | int(b)
    return anchors, positives, keys


def _split_domains(domains: list[PairDomain], valid_pairs: int, seed: int
                   ) -> tuple[list[PairDomain], list[PairDomain]]:
    """Hold out up to valid_pairs pairs (spread over the domains) that training never draws."""
    rng = np.random.default_rng(seed + 7919)
    train, valid = [], []
    per = int(np.ceil(valid_pairs / max(1, len(domains)))) if valid_pairs else 0
    for d in domains:
        idx = rng.permutation(len(d.pairs))
        k = min(per, max(0, len(d.pairs) - 1))
        valid.append(PairDomain(d.name, d.texts, d.pairs[idx[:k]]))
        train.append(PairDomain(d.name, d.texts, d.pairs[idx[k:]]))
    return train, [v for v in valid if len(v.pairs)]


def _pair_accuracy(model: Any, valid: list[PairDomain], batch: int = 128) -> float | None:
    """Share of held-out anchors whose own next item is the most similar among all held-out
    next items (chance = 1 / number of pairs)."""
    anchors = [d.texts[a - 1] for d in valid for a in d.pairs[:, 0]]
    positives = [d.texts[b - 1] for d in valid for b in d.pairs[:, 1]]
    if len(anchors) < 2:
        return None
    ea, eb = (model.encode(t, batch_size=batch, convert_to_numpy=True, normalize_embeddings=True,
                           show_progress_bar=False) for t in (anchors, positives))
    sims = ea @ eb.T
    return float(np.mean(np.argmax(sims, 1) == np.arange(len(anchors))))


def _freeze(model: Any, layers: int) -> None:
    """Keep the token embeddings and the bottom `layers` transformer layers fixed."""
    auto = model[0].auto_model
    for p in auto.embeddings.parameters():
        p.requires_grad = False
    blocks = getattr(getattr(auto, "encoder", None), "layer", None)
    if blocks is None:
        if layers:
            raise ConfigError("freeze_layers needs a BERT-style model (encoder.layer)")
        return
    for block in list(blocks)[:layers]:
        for p in block.parameters():
            p.requires_grad = False


def _load_model(folder: Path, max_tokens: int) -> Any:
    from shiftrec.text.encoders import load_sentence_transformer

    model = load_sentence_transformer(folder, "cpu")
    model.max_seq_length = max_tokens
    return model


def _tokens(model: Any, texts: list[str]) -> Any:
    prep = getattr(model, "preprocess", None) or model.tokenize
    return prep(texts)


def adapt_encoder(base: str | Path, domains: list[PairDomain], out_dir: str | Path,
                  cfg: AdaptConfig = AdaptConfig(), *, resume: bool = False,
                  base_fingerprint: str | None = None,
                  progress: Callable[[int, int, float], None] | None = None) -> dict[str, Any]:
    """Fine-tune the sentence-transformers folder `base` on `domains`' transition pairs and
    write the adapted model to `out_dir`. Returns the `adapt.json` record."""
    import torch

    from shiftrec.text.encoders import folder_fingerprint

    out = Path(out_dir)
    domains = [d for d in domains if len(d.pairs)]
    if not domains:
        raise InputError("no transition pairs: the sources have no consecutive different items "
                         "with text")
    state_file = out / ADAPT_FILE
    if resume and state_file.is_file():
        record = read_json(state_file)
        fixed = {k: v for k, v in asdict(cfg).items() if k not in _MAY_CHANGE}
        was = {k: v for k, v in record["config"].items() if k not in _MAY_CHANGE}
        if was != fixed:
            diff = ", ".join(f"{k} {was.get(k)} -> {v}" for k, v in fixed.items() if was.get(k) != v)
            raise ConfigError(f"cannot resume {out}: it was started with another config ({diff}); "
                              f"only {', '.join(_MAY_CHANGE)} may change")
        record["config"] = asdict(cfg)
        start = Path(out)
    else:
        record = {"base": str(base),
                  "base_fingerprint": base_fingerprint or folder_fingerprint(base),
                  "config": asdict(cfg),
                  "sources": {d.name: int(len(d.pairs)) for d in domains},
                  "steps_done": 0, "seconds": 0.0, "chunks": []}
        start = Path(base)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    train_doms, valid_doms = _split_domains(domains, cfg.valid_pairs, cfg.seed)
    record["valid_pairs"] = int(sum(len(d.pairs) for d in valid_doms))
    model = _load_model(start, cfg.max_tokens)
    if record["steps_done"] == 0 and valid_doms:
        record["valid_pair_accuracy_before"] = _pair_accuracy(model, valid_doms)
    while record["steps_done"] < cfg.steps:
        done = int(record["steps_done"])
        n = min(cfg.chunk_steps, cfg.steps - done)
        t0 = time.perf_counter()
        losses = _train_chunk(model, train_doms, cfg, done, n, progress)
        secs = time.perf_counter() - t0
        record["steps_done"] = done + n
        record["seconds"] = round(float(record["seconds"]) + secs, 1)
        acc = _pair_accuracy(model, valid_doms) if valid_doms else None
        record["chunks"].append({"steps": done + n, "mean_loss": round(float(np.mean(losses)), 4),
                                 "seconds": round(secs, 1), "pairs_per_second":
                                 round(n * cfg.batch_size / secs, 1),
                                 "valid_pair_accuracy": acc})
        record["valid_pair_accuracy"] = acc
        with atomic_dir(out) as tmp:
            model.save(str(tmp), safe_serialization=True)
            write_json(tmp / ADAPT_FILE, record)
    return record


def _train_chunk(model: Any, domains: list[PairDomain], cfg: AdaptConfig, done: int, n: int,
                 progress: Callable[[int, int, float], None] | None) -> list[float]:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(cfg.seed + done)  # dropout stream per chunk: a resumed run repeats it
    _freeze(model, cfg.freeze_layers)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    warm = max(1, n // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    model.train()
    losses = []
    for s in range(n):
        rng = np.random.default_rng([cfg.seed, done + s])
        anchors, positives, keys = _draw(domains, cfg.batch_size, rng, cfg.same_domain)
        emb = model(_tokens(model, anchors + positives))["sentence_embedding"]
        emb = F.normalize(emb, dim=-1)
        a, b = emb[:cfg.batch_size], emb[cfg.batch_size:]
        logits = a @ b.T / cfg.temperature
        k = torch.as_tensor(keys)
        dup = (k[:, None] == k[None, :]) & ~torch.eye(len(k), dtype=torch.bool)
        logits = logits.masked_fill(dup, float("-inf"))
        target = torch.arange(len(k))
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(done + s + 1, cfg.steps, losses[-1])
    model.eval()
    return losses

