"""The transfer model's nn.Modules (imports torch: imported only when a TransferNet is built;
see transfer.py for the model, its modes, objectives and checkpoints)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shiftrec.errors import ArtifactError, ConfigError, InputError
from shiftrec.models.layers import LN_EPS, TransformerBlock, init_linear
from shiftrec.models.repeat import repeat_gate
from shiftrec.models.transfer_config import (
    Mode,
    Objective,
    TransferConfig,
    batch_inputs,
    check_text_table,
    popularity_buckets,
)
from shiftrec.text.transform import TextTransform, apply_text_transform, fit_text_transform

#: the text path's two scalars train this many times faster than the other weights (see
#: TransferNet.__init__)
SKIP_LR_SCALE = 20.0
SKIP_LOG_RANGE = float(np.log(100.0))


class MoEAdaptor(nn.Module):
    """Parametric whitening experts (x - b_k) W_k mixed by a (noisy in training) softmax gate."""

    def __init__(self, d_in: int, d_out: int, n_experts: int, dropout: float, noise: bool):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(n_experts, d_in))
        self.weight = nn.Parameter(torch.randn(n_experts, d_in, d_out) * 0.02)
        self.gate = nn.Parameter(torch.zeros(d_in, n_experts))
        self.gate_noise = nn.Parameter(torch.zeros(d_in, n_experts))
        self.drop = nn.Dropout(dropout)
        self.noise = noise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1])
        logits = x @ self.gate
        if self.training and self.noise:
            logits = logits + torch.randn_like(logits) * F.softplus(x @ self.gate_noise)
        g = torch.softmax(logits, dim=-1)  # (N, K)
        xd = self.drop(x)
        k, d, h = self.weight.shape
        # sum_k g_k (x - b_k) W_k = sum_k g_k x W_k - sum_k g_k (b_k W_k): one GEMM
        xw = (xd @ self.weight.permute(1, 0, 2).reshape(d, k * h)).view(-1, k, h)
        bw = torch.bmm(self.bias.unsqueeze(1), self.weight).squeeze(1)  # (K, h)
        out = (g.unsqueeze(1) @ xw).squeeze(1) - g @ bw
        return out.reshape(*shape, -1)

class TransferNet(nn.Module):
    """See the module docstring. `text` is a non-persistent buffer (swap it per domain)."""

    def __init__(self, cfg: TransferConfig, text: np.ndarray, n_id_items: int | None = None):
        super().__init__()
        if cfg.hidden % cfg.n_heads:
            raise ConfigError(f"hidden ({cfg.hidden}) must be divisible by n_heads ({cfg.n_heads})")
        self.cfg = cfg
        self.objective = Objective(cfg.objective)
        self.text_dim = int(text.shape[1])
        self.register_buffer("text", torch.from_numpy(np.ascontiguousarray(text)), persistent=False)
        self._skip_text: torch.Tensor | None = None  # see _skip_table
        self.skip_fit: tuple[np.ndarray | None, np.ndarray | None] | None = None  # see _skip_table
        # the repeat/explore gate: {"share": next items found in the history, with the counts}
        # (transfer_fit.repeat_share); None = no gate. Not a weight: counted on training data
        # and kept in the checkpoint's manifest
        self.repeat_fit: dict | None = None
        self.adaptor = MoEAdaptor(self.text_dim, cfg.hidden, cfg.n_experts, cfg.adaptor_dropout,
                                  cfg.gate_noise)
        self.item_id: nn.Embedding | None = None
        if cfg.mode == Mode.TRANSDUCTIVE:
            self.item_id = self._new_id_table(n_id_items or text.shape[0] - 1)
        self.pos = nn.Embedding(cfg.max_len, cfg.hidden)
        nn.init.normal_(self.pos.weight, std=0.02)
        self.pop_bias: nn.Parameter | None = None  # TransferConfig.pop_buckets: a logit per bucket
        self.pop_bucket: torch.Tensor | None = None  # per item row; set_item_popularity (not a weight)
        self.pop_bucket_target: torch.Tensor | None = None  # as a training target (count - 1)
        if cfg.pop_buckets < 0 or cfg.pop_buckets == 1:
            raise ConfigError(f"pop_buckets must be 0 (off) or >= 2, got {cfg.pop_buckets}")
        if cfg.pop_buckets:
            self.pop_bias = nn.Parameter(torch.zeros(cfg.pop_buckets))
        self.ln = nn.LayerNorm(cfg.hidden, eps=LN_EPS)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(TransformerBlock(cfg.hidden, cfg.n_heads, cfg.inner, cfg.dropout,
                                                     cfg.attn_dropout, ff_dropout=True)
                                    for _ in range(cfg.n_layers))
        self.apply(init_linear)
        self.log_q: torch.Tensor | None = None  # see set_item_frequency (not a weight)
        if cfg.uniform_negatives < 0:
            raise ConfigError(f"uniform_negatives must be >= 0, got {cfg.uniform_negatives}")
        if cfg.uniform_negatives and cfg.logq:
            raise ConfigError("logq corrects in-batch (popularity-drawn) negatives only: use it or "
                              "uniform_negatives, not both")
        self.domain_ends: torch.Tensor | None = None  # see set_domains (not a weight)
        if cfg.text_skip:  # TransferConfig.text_skip
            self._add_text_path_parameters()

    def set_item_frequency(self, counts: np.ndarray) -> None:
        """Training counts per item row (row 0 = padding) for the logQ correction of the
        contrastive objective (TransferConfig.logq); add-one smoothed."""
        counts = np.asarray(counts, dtype=np.float64)
        if counts.shape != (self.n_items + 1,) or (counts < 0).any():
            raise InputError(f"item counts must be {self.n_items + 1} non-negative numbers; "
                             f"got shape {counts.shape}")
        q = (counts + 1.0) / (counts + 1.0).sum()
        self.log_q = torch.from_numpy(np.log(q).astype(np.float32)).to(self.text.device)

    def set_item_popularity(self, counts: np.ndarray, domain_sizes: list[int] | np.ndarray | None = None
                            ) -> None:
        """Training counts per item row (row 0 = padding) -> the popularity bucket of each item
        within its domain (TransferConfig.pop_buckets; `domain_sizes` as in set_domains for a
        merged table). A no-op for a net without the feature."""
        if self.pop_bias is None:
            return
        counts = np.asarray(counts)
        if counts.shape != (self.n_items + 1,):
            raise InputError(f"item counts must be {self.n_items + 1} numbers (row 0 = padding); "
                             f"got shape {counts.shape}")
        self.set_pop_buckets(popularity_buckets(counts, self.cfg.pop_buckets, domain_sizes),
                             popularity_buckets(counts, self.cfg.pop_buckets, domain_sizes, minus=1))

    def set_pop_buckets(self, buckets: np.ndarray, target_buckets: np.ndarray | None = None) -> None:
        """The bucket of every item row as stored with a fitted model (set_item_popularity), and
        as a training target, without its own event (popularity_buckets(minus=1); the same as
        `buckets` when None: a loaded model that is only scored)."""
        if self.pop_bias is None:
            return
        checked = []
        for arr in (buckets, buckets if target_buckets is None else target_buckets):
            b = np.asarray(arr, dtype=np.int64)
            if b.shape != (self.n_items + 1,) or (b < 0).any() or (b >= self.cfg.pop_buckets).any():
                raise InputError(f"popularity buckets must be {self.n_items + 1} integers in "
                                 f"0..{self.cfg.pop_buckets - 1}")
            checked.append(torch.from_numpy(b).to(self.text.device))
        self.pop_bucket, self.pop_bucket_target = checked

    def set_domains(self, sizes: list[int] | np.ndarray) -> None:
        """Item rows 1..n of the table as consecutive domains of these sizes (a merged pretraining
        table), so that uniform negatives come from the batch's own domain."""
        sizes = np.asarray(sizes, dtype=np.int64)
        if sizes.ndim != 1 or (sizes <= 0).any() or int(sizes.sum()) != self.n_items:
            raise InputError(f"domain sizes must be positive and sum to the {self.n_items} items; "
                             f"got {sizes.tolist()}")
        self.domain_ends = torch.from_numpy(np.cumsum(sizes)).to(self.text.device)

    def uniform_negative_ids(self, targets: torch.Tensor) -> torch.Tensor:
        """cfg.uniform_negatives item ids drawn uniformly from the targets' domain (the whole table
        when they span several domains or no domains were set), minus any of the targets."""
        lo, hi = 1, self.n_items
        if self.domain_ends is not None:
            ends = self.domain_ends.to(targets.device)
            d = torch.searchsorted(ends, torch.stack([targets.min(), targets.max()]) - 1, right=True)
            if int(d[0]) == int(d[1]):
                lo = 1 + (int(ends[d[0] - 1]) if int(d[0]) > 0 else 0)
                hi = int(ends[d[0]])
        neg = torch.randint(lo, hi + 1, (self.cfg.uniform_negatives,), device=targets.device)
        return neg[~torch.isin(neg, targets)]

    def _new_id_table(self, n_items: int) -> nn.Embedding:
        e = nn.Embedding(n_items + 1, self.cfg.hidden, padding_idx=0)
        nn.init.normal_(e.weight, std=0.02)
        with torch.no_grad():
            e.weight[0].zero_()
        return e

    @property
    def n_items(self) -> int:
        return int(self.text.shape[0]) - 1

    # ---- item side -------------------------------------------------------------------
    def set_item_text(self, text: np.ndarray, reset_ids: bool = True) -> None:
        """Swap the item table (a new domain, new items). Transductive ID embeddings are
        re-created for the new index unless reset_ids is False and the sizes agree."""
        text = check_text_table(text)
        if text.shape[1] != self.text_dim:
            raise ArtifactError(f"item text table has dim {text.shape[1]} but the model expects "
                                f"{self.text_dim}")
        dev = self.text.device
        if self.skip_fit is not None:  # items appended keep the fitted transform; another catalogue refits
            old = self.text.detach().cpu().numpy()
            if reset_ids or text.shape[0] < old.shape[0] or not np.array_equal(
                    np.asarray(text[:old.shape[0]], np.float32), old):
                self.skip_fit = None
        self.text = torch.from_numpy(np.ascontiguousarray(text)).to(dev)
        self._skip_text = None  # the text path's transformed table belonged to the old one
        self.log_q = None  # counts belonged to the old table
        if self.pop_bucket is not None:  # rows beyond the old table (new items) have no count
            grown = []
            for tab in (self.pop_bucket, self.pop_bucket_target):
                old = tab.cpu().numpy()
                keep = reset_ids is False and len(old) <= text.shape[0]
                b = np.zeros(text.shape[0], dtype=np.int64)
                if keep:
                    b[:len(old)] = old
                grown.append(torch.from_numpy(b).to(dev) if keep else None)
            self.pop_bucket, self.pop_bucket_target = grown
        self.domain_ends = None  # and so did the domains
        if self.item_id is not None and (reset_ids or self.item_id.num_embeddings != text.shape[0]):
            self.item_id = self._new_id_table(text.shape[0] - 1).to(dev)

    def item_embed(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Adapted embeddings of `ids` (any shape), or of the whole table when ids is None."""
        x = self.text if ids is None else self.text[ids]
        e = self.adaptor(x)
        if self.item_id is not None:
            e = e + (self.item_id.weight if ids is None else self.item_id(ids))
        return e

    def pop_logits(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """The learned popularity logit of `ids` (or of every item row): pop_bias[bucket] /
        temperature (the bias lives in cosine units, like the rest of the logit, so that an
        optimiser step moves it as far as it moves a cosine)."""
        if self.pop_bucket is None:
            raise ConfigError("this model has the popularity feature (pop_buckets): set the "
                              "items' training counts first (TransferNet.set_item_popularity)")
        pb = self.pop_bucket.to(self.pop_bias.device)
        return self.pop_bias[pb if ids is None else pb[ids]] / self.cfg.temperature

    def pop_target_shift(self, ids: torch.Tensor) -> torch.Tensor:
        """What a training target's own logit changes by when its popularity is counted without
        the event being predicted: pop_bias[bucket - its event] - pop_bias[bucket], / temperature."""
        pt = self.pop_bucket_target.to(self.pop_bias.device)
        return self.pop_bias[pt[ids]] / self.cfg.temperature - self.pop_logits(ids)

    # ---- sequence side ---------------------------------------------------------------
    def encode(self, seq: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) item ids, left- or right-padded with 0 -> (B, L, hidden) causal states.

        Positions count real items from the first one (position p = the p-th item of the
        history), so left-aligned training windows and right-aligned scoring histories agree.
        Pad positions carry junk states that callers ignore.
        """
        b, n = seq.shape
        if n > self.cfg.max_len:
            raise InputError(f"sequence window {n} is longer than max_len {self.cfg.max_len}")
        if emb is None:
            emb = self.item_embed(seq)
        valid = seq > 0
        pos = (valid.long().cumsum(1) - 1).clamp_(min=0)
        x = self.drop(self.ln(emb + self.pos(pos)))
        causal = torch.ones(n, n, dtype=torch.bool, device=seq.device).tril()
        mask = causal[None] & valid[:, None, :]
        mask = mask | torch.eye(n, dtype=torch.bool, device=seq.device)[None]
        mask = mask[:, None]  # (B, 1, L, L)
        for blk in self.blocks:
            x = blk(x, mask)
        return x

    def user_vectors(self, seq: torch.Tensor, table: torch.Tensor | None = None,
                     chunk: int = 256) -> torch.Tensor:
        """Right-aligned histories (B, L) -> (B, hidden) state after the last item.

        `table` (item_embed() of every item) avoids re-adapting the history items."""
        seq = seq[:, -self.cfg.max_len:]
        if self.training or seq.shape[0] <= chunk:
            return self._user_vectors_trimmed(seq, table)
        # inference: sort by length and trim each chunk's leading padding (no change in
        # results, far less work when most histories are short)
        lens = (seq > 0).sum(1)
        order = torch.argsort(lens)
        out = torch.empty(seq.shape[0], self.cfg.hidden, device=seq.device)
        for a in range(0, seq.shape[0], chunk):
            rows = order[a:a + chunk]
            out[rows] = self._user_vectors_trimmed(seq[rows], table)
        return out

    def _user_vectors_trimmed(self, seq: torch.Tensor, table: torch.Tensor | None
                              ) -> torch.Tensor:
        width = max(int((seq > 0).sum(1).max()), 1)
        seq = seq[:, -width:]
        emb = None if table is None else table[seq]
        return self.encode(seq, emb)[:, -1]

    # ---- text-similarity path (TransferConfig.text_skip) -----------------------------
    def enable_text_path(self, weight: float, decay: float,
                         transform: TextTransform = TextTransform.NONE) -> None:
        """Turn the text path on with this weight, decay and text transform (chosen on validation
        after training: pipelines.transfer.select_text_path); every other weight is unchanged."""
        from dataclasses import replace

        self.cfg = replace(self.cfg, text_skip=True, skip_init=float(weight), skip_decay_init=float(decay),
                           skip_transform=TextTransform(transform))
        self._skip_text, self.skip_fit = None, None
        self._add_text_path_parameters()

    def _add_text_path_parameters(self) -> None:
        """The path's two scalars, starting at cfg.skip_init and cfg.skip_decay_init. They are
        stored at 1/SKIP_LR_SCALE of their working scale: an optimiser step (about lr in size for
        Adam) moves them SKIP_LR_SCALE times further, enough to find their values in the few
        hundred steps of a small target."""
        cfg = self.cfg
        if not cfg.skip_init > 0 or not 0 < cfg.skip_decay_init < 1:
            raise ConfigError(f"text path: skip_init must be > 0 and skip_decay_init in (0, 1); "
                              f"got {cfg.skip_init}, {cfg.skip_decay_init}")
        dev = self.text.device
        decay_logit = float(np.log(cfg.skip_decay_init / (1 - cfg.skip_decay_init))) / SKIP_LR_SCALE
        self.skip_log_weight = nn.Parameter(torch.zeros((), device=dev))  # weight = skip_init * exp(S * .)
        self.skip_decay_logit = nn.Parameter(torch.tensor(decay_logit, device=dev))

    @property
    def skip_weight(self) -> torch.Tensor:
        # within 1/100 .. 100 times skip_init: a long run cannot push it to inf
        return self.cfg.skip_init * torch.exp((SKIP_LR_SCALE * self.skip_log_weight).clamp(-SKIP_LOG_RANGE,
                                                                                          SKIP_LOG_RANGE))

    @property
    def skip_decay(self) -> torch.Tensor:
        return torch.sigmoid(SKIP_LR_SCALE * self.skip_decay_logit)

    def unit_text(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Unit-length text vectors of `ids` (or of the whole table) for the text path: the raw
        encoder vectors, or after cfg.skip_transform fitted on the item table; padding stays 0."""
        t = self.text if self.cfg.skip_transform == TextTransform.NONE else self._skip_table()
        return F.normalize(t if ids is None else t[ids], dim=-1)

    def _skip_table(self) -> torch.Tensor:
        """The item table after cfg.skip_transform. The transform (`skip_fit`: mean, projection)
        is fitted on the catalogue's rows the first time and kept: items appended later
        (set_item_text with the old table as its head, as serving's extend_items does) get the
        same map, and a checkpoint stores it beside its item table; another catalogue (a new
        domain) or enable_text_path fits it afresh."""
        t = self._skip_text
        if t is None or t.shape != self.text.shape or t.device != self.text.device:
            arr = apply_text_transform(self.text.detach().cpu().numpy(), *self.text_transform_fit())
            t = self._skip_text = torch.from_numpy(arr).to(self.text.device)
        return t

    def text_transform_fit(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The text path's (mean, projection) of cfg.skip_transform, fitted on the item table's
        rows on first use (see _skip_table)."""
        if self.skip_fit is None:
            self.skip_fit = fit_text_transform(self.text.detach().cpu().numpy()[1:], self.cfg.skip_transform)
        return self.skip_fit

    def text_profiles(self, seq: torch.Tensor, last_only: bool) -> torch.Tensor:
        """Unit recency-weighted sums of the history items' unit text vectors: (B, d) after the
        last position of right-aligned histories, or (B, L, d) after every position of
        left-aligned windows (causal: position t sees items 0..t)."""
        e = self.unit_text(seq)  # pads are zero rows
        n = seq.shape[1]
        decay = self.skip_decay
        t = torch.arange(n, device=seq.device)
        if last_only:
            p = torch.einsum("l,bld->bd", decay ** (n - 1 - t).float(), e)
        else:
            lag = t[:, None] - t[None, :]
            w = torch.where(lag >= 0, decay ** lag.clamp(min=0).float(), torch.zeros((), device=seq.device))
            p = torch.einsum("tl,bld->btd", w, e)
        return F.normalize(p, dim=-1)

    def skip_logits(self, profiles: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        """skip_weight * cos(profile, item text) for every item (or for `ids`)."""
        return self.skip_weight * (profiles @ self.unit_text(ids).T)

    def query_vectors(self, seq: torch.Tensor) -> torch.Tensor:
        """Right-aligned histories -> vectors q with score_all(seq) == q @ item_vectors().T:
        the unit user vector / temperature, and with the text path, skip_weight * profile."""
        q = F.normalize(self.user_vectors(seq), dim=-1) / self.cfg.temperature
        if self.cfg.text_skip:
            prof = self.text_profiles(seq[:, -self.cfg.max_len:], last_only=True)
            q = torch.cat([q, self.skip_weight * prof], dim=-1)
        if self.pop_bias is not None:  # a constant 1 that meets each item's popularity logit
            q = torch.cat([q, torch.ones(q.shape[0], 1, device=q.device, dtype=q.dtype)], dim=-1)
        return q

    def item_vectors(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Unit adapted item vectors (and, with the text path, the unit raw text vectors)."""
        v = F.normalize(self.item_embed(ids), dim=-1)
        if self.cfg.text_skip:
            v = torch.cat([v, self.unit_text(ids)], dim=-1)
        if self.pop_bias is not None:
            v = torch.cat([v, self.pop_logits(ids).unsqueeze(-1).to(v.dtype)], dim=-1)
        return v

    def logits(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        u = F.normalize(users, dim=-1)
        v = F.normalize(items, dim=-1)
        return (u @ v.T) / self.cfg.temperature

    def score_all(self, seq: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) right-aligned histories -> (B, n_items + 1) scores; column 0 is -inf."""
        table = self.item_embed()
        s = self.logits(self.user_vectors(seq, table), table)
        if self.cfg.text_skip:
            s = s + self.skip_logits(self.text_profiles(seq[:, -self.cfg.max_len:], last_only=True))
        if self.pop_bias is not None:
            s = s + self.pop_logits()
        s[:, 0] = float("-inf")
        if self.repeat_fit is not None:  # last: the gate weighs the history against the rest
            s = repeat_gate(s, seq[:, -self.cfg.max_len:], float(self.repeat_fit["share"]))
        return s

    # ---- objectives ------------------------------------------------------------------
    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        seq, tgt = batch_inputs(batch)
        if self.objective == Objective.FULL_CE:
            return self.full_ce_loss(seq, tgt)
        return self.contrastive_loss(seq, tgt)

    def full_ce_loss(self, seq: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        table = self.item_embed()  # adapt every item once; inputs index the same table
        h = self.encode(seq, table[seq])
        sel = tgt > 0
        if not bool(sel.any()):
            return h.sum() * 0.0
        s = self.logits(h[sel], table)
        if self.cfg.text_skip:
            s = s + self.skip_logits(self.text_profiles(seq, last_only=False)[sel])
        if self.pop_bias is not None:
            s = s + self.pop_logits()
            t = tgt[sel]
            s = s.index_put((torch.arange(len(t), device=s.device), t), self.pop_target_shift(t),
                            accumulate=True)
        s[:, 0] = float("-inf")
        return F.cross_entropy(s, tgt[sel])

    def contrastive_loss(self, seq: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        emb = self.item_embed(seq)
        h = self.encode(seq, emb)
        sel = tgt > 0
        if not bool(sel.any()):
            return h.sum() * 0.0
        # sequence -> item, every prefix, in-batch negatives (same item elsewhere masked)
        t = tgt[sel]
        uniq, inv = torch.unique(t, return_inverse=True)
        cols = uniq  # in-batch positives are each other's negatives; + uniform draws
        if cfg.uniform_negatives:
            cols = torch.cat([uniq, self.uniform_negative_ids(uniq)])
        s = self.logits(h[sel], self.item_embed(cols))
        if cfg.text_skip:
            s = s + self.skip_logits(self.text_profiles(seq, last_only=False)[sel], cols)
        if self.pop_bias is not None:  # each row's own target without its event; others as is
            s = s + self.pop_logits(cols)
            s = s.index_put((torch.arange(len(t), device=s.device), inv), self.pop_target_shift(t),
                            accumulate=True)
        if cfg.logq:
            if self.log_q is None:
                raise ConfigError("logq correction needs the items' training counts "
                                  "(TransferNet.set_item_frequency)")
            s = s - self.log_q.to(s.device)[uniq]
        loss = F.cross_entropy(s, inv)
        if cfg.seq_weight > 0 and seq.shape[0] > 1:
            # sequence <-> sequence: two item-dropout views of each full sequence
            keep1 = (torch.rand(seq.shape, device=seq.device) >= cfg.item_drop).unsqueeze(-1)
            keep2 = (torch.rand(seq.shape, device=seq.device) >= cfg.item_drop).unsqueeze(-1)
            last = ((seq > 0).sum(1) - 1).clamp(min=0)
            rows = torch.arange(seq.shape[0], device=seq.device)
            z1 = self.encode(seq, emb * keep1)[rows, last]
            z2 = self.encode(seq, emb * keep2)[rows, last]
            s2 = self.logits(z1, z2)
            lab = torch.arange(seq.shape[0], device=seq.device)
            loss = loss + cfg.seq_weight * 0.5 * (F.cross_entropy(s2, lab) + F.cross_entropy(s2.T, lab))
        return loss
