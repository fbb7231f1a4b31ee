"""A sequence recommender that follows a user's interest shift ("shiftaware").

A SASRec-style causal transformer over item IDs (same layout and parameter names as
models.sasrec, so a trained SASRec can warm-start it) with four optional shift signals, each
switched by a config flag so that they can be chosen by validation:

- ``gap_emb``: an embedding of the bucketised log time interval between each event and the one
  before it, added to the item embedding (how fast the user moves; a long pause often precedes
  a new interest).
- ``time_bias``: recency weighting inside attention: a learned bias per head and per bucket of
  the elapsed time t_p - t_j between the predicting event p and an earlier event j (TiSASRec-like,
  but as scalar biases, so the causal all-prefix training pass still applies).
- ``trend_prior``: log P(item | time), the platform's popularity in the days before the user's
  last event (exponentially decayed counts of training events, one table per half-life; only
  complete buckets strictly before the event's bucket are used). This is what users move *to*.
- ``topic_prior``: log P(topic(item) | fast-decay topic profile), the recent-topic affinity of
  the interest profile model.
- ``flow_prior``: log P(topic(item) | where interest flows next) = log (fast profile @ M), with M
  the platform's topic -> next-topic migration matrix counted on consecutive training events
  (the migration flows of interest.flows, at the event level).

The priors are added to the transformer's logits with weights from an *interest gate*:
``gate=shift`` computes them at each position from the shift detector's features (Jensen-Shannon
divergence between the fast- and slow-decay topic profiles, their entropies, history length, the
last time interval), from how much of the transformer's own prediction stays inside the user's
topics, and from the transformer state; ``gate=fixed`` learns one constant weight per prior.
Trend weights are non-negative; topic weights are signed, so a user who looks about to move on
can be pushed *away* from the recent topics.

The objective is the full softmax cross-entropy over all items at every supervised prefix
(train.batches.CausalBatches with times), trained by train.trainer; with ``shift_weight`` > 1 the
targets outside the prefix's dominant topics (the evaluation's 'shifted' definition, on the
event-decayed profile) weigh more, trading accuracy on stable users for shifted ones.

Times: score() uses the history times (unix seconds, aligned with histories). The time of the
item being predicted is never used (evaluation does not know it). Without times (times=None)
the time signals fall back to an 'unknown' bucket and the global popularity row.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shiftrec.config import to_dict
from shiftrec.data.splits import SeqSplit
from shiftrec.errors import ArtifactError, ConfigError, InputError
from shiftrec.models.torch_base import (
    apply_overrides,
    check_shapes,
    load_state_strict,
    read_torch_artifact,
    save_torch_artifact,
)
from shiftrec.train.trainer import Phase, TrainConfig, TrainResult, score_module

DAY = 86400


class GateMode(enum.StrEnum):
    SHIFT = "shift"  # prior weights from the shift-detector features + transformer state
    FIXED = "fixed"  # one learned constant weight per prior


def _default_train() -> TrainConfig:
    return TrainConfig(phases=(Phase(name="train", epochs=200, lr=1e-3, batch_size=2048,
                                     patience=10),))


@dataclass(frozen=True)
class ShiftAwareConfig:
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    inner: int = 256
    dropout: float = 0.5
    attn_dropout: float = 0.5
    max_len: int = 50
    stride: int = 10
    bucket: bool = True
    # --- shift signals
    gap_emb: bool = True
    time_bias: bool = True
    trend_prior: bool = True
    topic_prior: bool = True
    flow_prior: bool = False
    gate: GateMode = GateMode.SHIFT
    # --- time buckets: 0 = no previous event, 1 = same second, 2.. = 2 + floor(log2(1 + dt /
    # time_unit_s)), last = unknown (no times given)
    n_time_buckets: int = 24
    time_unit_s: float = 3600.0
    # --- trend prior: popularity in complete buckets before the event, one table per half-life
    trend_bucket_days: float = 1.0
    trend_max_rows: int = 512  # buckets are widened so that the table has at most this many rows
    trend_half_lives_days: tuple[float, ...] = (3.0, 90.0)
    trend_smoothing: float = 20.0  # pseudo-events of global popularity in every row
    # --- topic profiles (event-decayed, as the shift detector)
    fast_half_life: float = 2.0
    slow_half_life: float = 20.0
    # --- objective: weight of training targets outside the prefix's dominant topics (1 = plain CE)
    shift_weight: float = 1.0
    dominant_coverage: float = 0.8  # dominant topics: fewest top topics of the slow profile
    dominant_max: int = 3  # covering this share of its mass, at most this many
    gate_init: float = -1.0  # initial pre-softplus gate value (prior weights start at 0.31)
    gate_scale: float = 10.0  # pre-activation = gate_scale * (linear output): a faster-moving gate
    train: TrainConfig = field(default_factory=_default_train)

    def __post_init__(self) -> None:
        if self.hidden % self.heads:
            raise ConfigError(f"shiftaware: hidden ({self.hidden}) must be divisible by heads "
                              f"({self.heads})")
        if self.n_time_buckets < 4:
            raise ConfigError(f"shiftaware: n_time_buckets must be >= 4, got {self.n_time_buckets}")
        if self.time_unit_s <= 0 or self.trend_bucket_days <= 0:
            raise ConfigError("shiftaware: time_unit_s and trend_bucket_days must be > 0")
        if self.trend_prior and not self.trend_half_lives_days:
            raise ConfigError("shiftaware: trend_prior needs at least one trend half-life")
        if any(h <= 0 for h in self.trend_half_lives_days) or self.fast_half_life <= 0 \
                or self.slow_half_life <= 0:
            raise ConfigError("shiftaware: half-lives must be > 0")
        if self.shift_weight <= 0:
            raise ConfigError(f"shiftaware: shift_weight must be > 0, got {self.shift_weight}")
        if self.gate_scale <= 0:
            raise ConfigError(f"shiftaware: gate_scale must be > 0, got {self.gate_scale}")
        if self.trend_max_rows < 2:
            raise ConfigError("shiftaware: trend_max_rows must be >= 2")

    @property
    def n_trend(self) -> int:
        return len(self.trend_half_lives_days) if self.trend_prior else 0

    @property
    def n_priors(self) -> int:
        return self.n_trend + int(self.topic_prior) + int(self.flow_prior)


FEATURE_NAMES = ("jsd", "slow_entropy", "fast_entropy", "length", "last_gap", "fast_top_share",
                 "model_on_slow", "model_on_fast", "model_topic_entropy")
N_FEATURES = len(FEATURE_NAMES)


# ----------------------------------------------------------------------------- data-side tables


def time_buckets(dt: np.ndarray, n_buckets: int, unit_s: float) -> np.ndarray:
    """Bucket of elapsed seconds (numpy twin of the torch version): 1 for 0 s, then log2."""
    dt = np.maximum(np.asarray(dt, dtype=np.float64), 0.0)
    b = 2 + np.floor(np.log2(1.0 + dt / unit_s))
    b = np.where(dt == 0, 1, b)
    return np.minimum(b, n_buckets - 2).astype(np.int64)


def trend_tables(items: np.ndarray, times: np.ndarray, n_items: int, cfg: ShiftAwareConfig
                 ) -> tuple[np.ndarray, int, int]:
    """log P(item | time) tables (n_trend, rows + 1, n_items + 1), origin t0 and bucket seconds.

    Row 0 is the global popularity (no time known, or before the data); row k >= 1 holds the
    decayed counts of buckets 0..k-1 (strictly before bucket k), mixed with `trend_smoothing`
    pseudo-events of global popularity. Column 0 (padding) is -inf-like (very small).
    """
    items = np.asarray(items, np.int64)
    times = np.asarray(times, np.int64)
    n1 = n_items + 1
    glob = np.bincount(items, minlength=n1).astype(np.float64) + 1.0
    glob[0] = 0.0
    glob /= glob.sum()
    if len(times) == 0:
        t0, span = 0, 1
    else:
        t0, span = int(times.min()), int(times.max() - times.min()) + 1
    bsec = int(cfg.trend_bucket_days * DAY)
    bsec = max(bsec, -(-span // cfg.trend_max_rows))
    nb = max(-(-span // bsec), 1)
    b = (times - t0) // bsec
    counts = np.zeros((nb, n1), np.float64)
    np.add.at(counts, (b, items), 1.0)
    out = np.empty((len(cfg.trend_half_lives_days), nb + 1, n1), np.float32)
    for k, hl in enumerate(cfg.trend_half_lives_days):
        decay = 0.5 ** (bsec / (hl * DAY))
        acc = np.zeros(n1)
        out[k, 0] = np.log(glob + 1e-12)
        for r in range(nb):
            acc = acc * decay + counts[r]
            row = (acc + cfg.trend_smoothing * glob) / (acc.sum() + cfg.trend_smoothing)
            out[k, r + 1] = np.log(row + 1e-12)
    out[:, :, 0] = np.log(1e-12)
    return out, t0, bsec


def topic_index(item_topic: np.ndarray) -> tuple[np.ndarray, int]:
    """Topic per item with -1 (no topic) and padding mapped to an extra topic T; returns T + 1."""
    it = np.asarray(item_topic, np.int64).copy()
    T = int(it.max(initial=-1)) + 1
    it[it < 0] = T
    if len(it):
        it[0] = T
    return it, T + 1


def flow_table(train: Any, item_topic: np.ndarray, n_topics: int, alpha: float = 1.0) -> np.ndarray:
    """log P(next event's topic | this event's topic) (T, T) from consecutive training events of
    each user, smoothed with `alpha` pseudo-transitions spread as the overall topic mix."""
    items, indptr = np.asarray(train.items, np.int64), np.asarray(train.indptr, np.int64)
    T = n_topics
    if len(items) < 2:
        return np.full((T, T), -np.log(T), np.float32)
    same = np.ones(len(items) - 1, bool)
    cut = indptr[1:-1] - 1
    same[cut[(cut >= 0) & (cut < len(same))]] = False  # no transition across users
    a, b = item_topic[items[:-1]][same], item_topic[items[1:]][same]
    counts = np.bincount(a * T + b, minlength=T * T).reshape(T, T).astype(np.float64)
    mix = np.bincount(item_topic[items], minlength=T).astype(np.float64) + 1.0
    mix /= mix.sum()
    p = (counts + alpha * T * mix[None, :]) / (counts.sum(1, keepdims=True) + alpha * T)
    return np.log(p).astype(np.float32)


# ----------------------------------------------------------------------------- the torch module


def build_net(n_items: int, n_topics: int, n_trend_rows: int, cfg: ShiftAwareConfig) -> Any:
    """The ShiftAware nn.Module (imports torch lazily). Buffers hold the data-side tables."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    H, NB = cfg.hidden, cfg.n_time_buckets
    UNKNOWN = NB - 1

    def tbucket(dt: torch.Tensor) -> torch.Tensor:
        dtf = dt.clamp(min=0).double()
        b = 2 + torch.floor(torch.log2(1.0 + dtf / cfg.time_unit_s))
        b = torch.where(dtf == 0, torch.ones_like(b), b)
        return b.clamp(max=NB - 2).long()

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(H, 3 * H)
            self.out = nn.Linear(H, H)
            self.ln1 = nn.LayerNorm(H, eps=1e-12)
            self.ff1 = nn.Linear(H, cfg.inner)
            self.ff2 = nn.Linear(cfg.inner, H)
            self.ln2 = nn.LayerNorm(H, eps=1e-12)
            self.drop = nn.Dropout(cfg.dropout)

        def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
            b, w, h = x.shape
            q, k, v = self.qkv(x).view(b, w, 3, cfg.heads, h // cfg.heads).permute(2, 0, 3, 1, 4)
            p = cfg.attn_dropout if self.training else 0.0
            if mask is None:
                a = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
            else:
                a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype), dropout_p=p)
            a = a.transpose(1, 2).reshape(b, w, h)
            x = self.ln1(x + self.drop(self.out(a)))
            return self.ln2(x + self.drop(self.ff2(F.gelu(self.ff1(x)))))

    class ShiftAwareNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.n_items = n_items
            self.max_len = cfg.max_len
            self.item_emb = nn.Embedding(n_items + 1, H, padding_idx=0)
            self.pos_emb = nn.Embedding(cfg.max_len, H)
            self.ln = nn.LayerNorm(H, eps=1e-12)
            self.drop = nn.Dropout(cfg.dropout)
            self.blocks = nn.ModuleList([Block() for _ in range(cfg.layers)])
            self.apply(self._init)
            if cfg.gap_emb:
                self.gap_emb = nn.Embedding(NB, H)
                nn.init.zeros_(self.gap_emb.weight)  # starts as plain SASRec
            if cfg.time_bias:
                self.time_bias = nn.Parameter(torch.zeros(cfg.heads, NB))
            K = cfg.n_priors
            if K:
                # trend weights start at softplus(gate_init), signed topic weights at 0
                init = torch.zeros(K)
                init[:cfg.n_trend] = cfg.gate_init / cfg.gate_scale
                if cfg.gate == GateMode.SHIFT:
                    self.gate = nn.Linear(N_FEATURES + H, K)
                    nn.init.zeros_(self.gate.weight)
                    with torch.no_grad():
                        self.gate.bias.copy_(init)
                else:
                    self.gate_const = nn.Parameter(init)
            # data-side tables (saved with the weights)
            self.register_buffer("item_topic", torch.zeros(n_items + 1, dtype=torch.long))
            self.register_buffer("trend_log", torch.zeros(cfg.n_trend, n_trend_rows, n_items + 1))
            self.register_buffer("trend_origin", torch.zeros(2, dtype=torch.long))  # t0, bucket s
            self.register_buffer("flow", torch.zeros(n_topics, n_topics))  # log P(next | topic)
            self.n_topics = n_topics

        @staticmethod
        def _init(m: nn.Module) -> None:
            if isinstance(m, nn.Linear | nn.Embedding):
                nn.init.normal_(m.weight, 0.0, 0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
            if isinstance(m, nn.Embedding) and m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()

        # ------------------------------------------------------------------ encoder
        def encode(self, seq: torch.Tensor, times: torch.Tensor | None) -> torch.Tensor:
            """Left-aligned (B, W) items (+ times) -> (B, W, H), causal."""
            b, w = seq.shape
            dev = seq.device
            pos = torch.arange(w, device=dev)
            x = self.item_emb(seq) + self.pos_emb(pos)[None]
            if cfg.gap_emb:
                x = x + self.gap_emb(self.gap_buckets(seq, times))
            x = self.drop(self.ln(x))
            mask = None
            if cfg.time_bias and times is not None:
                dt = times[:, :, None] - times[:, None, :]  # (B, p, j): t_p - t_j
                bias = self.time_bias[:, tbucket(dt)].permute(1, 0, 2, 3)  # (B, heads, W, W)
                causal = torch.ones(w, w, dtype=torch.bool, device=dev).tril()
                mask = bias.masked_fill(~causal, float("-inf"))
            for blk in self.blocks:
                x = blk(x, mask)
            return x

        def gap_buckets(self, seq: torch.Tensor, times: torch.Tensor | None) -> torch.Tensor:
            if times is None:
                return torch.full_like(seq, UNKNOWN)
            gap = torch.zeros_like(times)
            gap[:, 1:] = times[:, 1:] - times[:, :-1]
            out = tbucket(gap)
            out[:, 0] = 0
            return out

        # ------------------------------------------------------------------ shift features
        def topic_mass(self, seq: torch.Tensor, half_lives: tuple[float, ...]) -> list[torch.Tensor]:
            """Event-decayed topic mass at every position (B, W, T), causal, per half-life."""
            w = seq.shape[1]
            dev = seq.device
            onehot = F.one_hot(self.item_topic[seq], self.n_topics).float() * (seq > 0)[..., None].float()
            age = (torch.arange(w, device=dev)[:, None] - torch.arange(w, device=dev)[None, :]).float()
            causal = age >= 0
            out = []
            for hl in half_lives:
                d = torch.where(causal, torch.exp2(-age.clamp(min=0) / hl), torch.zeros_like(age))
                out.append(torch.einsum("pj,bjt->bpt", d, onehot))
            return out

        def profiles(self, seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """Fast- and slow-decay topic distributions at every position (B, W, T), causal."""
            T = self.n_topics
            fast, slow = [(mass + 1.0 / T) / (mass.sum(-1, keepdim=True) + 1.0) for mass in
                          self.topic_mass(seq, (cfg.fast_half_life, cfg.slow_half_life))]
            return fast, slow

        def features(self, seq: torch.Tensor, times: torch.Tensor | None,
                     fast: torch.Tensor, slow: torch.Tensor) -> torch.Tensor:
            """(B, W, 6) history features at every position (the model-based ones are added at
            the predicting positions by `model_features`)."""
            w = seq.shape[1]
            m = 0.5 * (fast + slow)
            jsd = 0.5 * ((fast * (fast / m).log2()).sum(-1) + (slow * (slow / m).log2()).sum(-1))
            logT = math.log(max(self.n_topics, 2))
            ent_s = -(slow * slow.log()).sum(-1) / logT
            ent_f = -(fast * fast.log()).sum(-1) / logT
            n = torch.log1p(torch.arange(w, device=seq.device).float())[None].expand_as(jsd) \
                / math.log(cfg.max_len + 1)
            if times is None:
                gap = torch.zeros_like(jsd)
            else:
                g = torch.zeros_like(times)
                g[:, 1:] = times[:, 1:] - times[:, :-1]
                gap = torch.log1p(g.clamp(min=0).float() / DAY) / 5.0
            top = fast.max(-1).values
            return torch.stack([jsd, ent_s, ent_f, n, gap, top], -1)

        def model_features(self, logits: torch.Tensor, fast: torch.Tensor, slow: torch.Tensor
                           ) -> torch.Tensor:
            """(n, 3): how much of the transformer's own prediction stays in the user's topics
            (expected slow / fast profile probability of the predicted topic) and the entropy of
            its predicted topic mix. `logits` (n, n_items) over real items, used detached."""
            p = torch.softmax(logits.detach().float(), -1)
            mass = p.new_zeros((len(p), self.n_topics)).index_add_(1, self.item_topic[1:], p)
            ent = -(mass * (mass + 1e-12).log()).sum(-1) / math.log(max(self.n_topics, 2))
            return torch.stack([(mass * slow).sum(-1), (mass * fast).sum(-1), ent], -1)

        def gate_weights(self, h: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
            """Prior weights (..., K): trend weights >= 0 (softplus); topic weights are signed
            (a user on the move is pushed *away* from the recent topics)."""
            if cfg.gate == GateMode.SHIFT:
                raw = cfg.gate_scale * self.gate(torch.cat([feats, h], -1))
            else:
                raw = (cfg.gate_scale * self.gate_const).expand(*h.shape[:-1], -1)
            nt = cfg.n_trend
            if nt == raw.shape[-1]:
                return F.softplus(raw)
            return torch.cat([F.softplus(raw[..., :nt]), raw[..., nt:]], -1)

        def trend_rows(self, times: torch.Tensor | None, shape: torch.Size) -> torch.Tensor:
            """Row index of the trend table for each time (0 = global: no time known)."""
            if times is None:
                return torch.zeros(shape, dtype=torch.long, device=self.trend_origin.device)
            t0, bsec = self.trend_origin[0], self.trend_origin[1]
            k = torch.div(times - t0, bsec, rounding_mode="floor")
            k = torch.where(times - t0 < 0, torch.zeros_like(k), k)
            return k.clamp(0, self.trend_log.shape[1] - 1)

        def prior_logits(self, seq: torch.Tensor, times: torch.Tensor | None, h: torch.Tensor,
                         sel: tuple[torch.Tensor, ...] | torch.Tensor, logits: torch.Tensor,
                         full: bool) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
            """Weighted sum of the prior log-probabilities at the selected positions.

            `sel` indexes (B, W) positions (a boolean mask or (rows, cols)); `h` is the hidden
            state and `logits` (n, n_items) the transformer's item logits at those positions.
            Returns (n, n_items [+1 if full]) or None, gate weights (n, K), features (n, F).
            """
            fast_all, slow_all = self.profiles(seq)
            hist = self.features(seq, times, fast_all, slow_all)[sel]
            fast, slow = fast_all[sel], slow_all[sel]
            feats = torch.cat([hist, self.model_features(logits, fast, slow)], -1)
            if not cfg.n_priors:
                return None, h.new_zeros((len(h), 0)), feats
            wts = self.gate_weights(h, feats)
            cols = slice(0, None) if full else slice(1, None)
            out = None
            k = 0
            if cfg.trend_prior:
                rows = self.trend_rows(None if times is None else times, seq.shape)[sel]
                for j in range(cfg.n_trend):
                    term = wts[:, k:k + 1] * self.trend_log[j][rows][:, cols]
                    out = term if out is None else out + term
                    k += 1
            it = self.item_topic[cols]
            if cfg.topic_prior:
                term = wts[:, k:k + 1] * fast.log()[:, it]
                out = term if out is None else out + term
                k += 1
            if cfg.flow_prior:
                nxt = fast @ self.flow.exp()  # (n, T): P(next topic | recent profile)
                term = wts[:, k:k + 1] * nxt.log()[:, it]
                out = term if out is None else out + term
            return out, wts, feats

        # ------------------------------------------------------------------ trainer API
        def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            seq, labels = batch["seq"], batch["labels"]
            times = batch.get("times")
            h = self.encode(seq, times)
            m = labels > 0
            hs = h[m]
            logits = hs @ self.item_emb.weight[1:].T
            prior, _, _ = self.prior_logits(seq, times, hs, m, logits, full=False)
            if prior is not None:
                logits = logits + prior
            if cfg.shift_weight == 1.0:
                return F.cross_entropy(logits, labels[m] - 1)
            ce = F.cross_entropy(logits, labels[m] - 1, reduction="none")
            w = torch.where(self.shifted_targets(seq, labels)[m], cfg.shift_weight, 1.0)
            return (w * ce).sum() / w.sum()

        def shifted_targets(self, seq: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            """(B, W) bool: the label's topic is outside the dominant topics of the prefix (the
            evaluation's shifted slice, with the event-decayed slow profile)."""
            with torch.no_grad():
                (mass,) = self.topic_mass(seq, (cfg.slow_half_life,))
                share = mass / mass.sum(-1, keepdim=True).clamp(min=1e-12)
                srt, order = share.sort(-1, descending=True)
                need = ((srt.cumsum(-1) < cfg.dominant_coverage - 1e-9).sum(-1) + 1
                        ).clamp(max=cfg.dominant_max)
                rank = order.argsort(-1)
                dom = (rank < need[..., None]) & (share > 0)
                tt = self.item_topic[labels]
                return ~dom.gather(-1, tt[..., None])[..., 0]

        def _left(self, seq: torch.Tensor, times: torch.Tensor | None
                  ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
            seq = seq[:, -self.max_len:]
            lens = (seq > 0).sum(1)
            w = max(int(lens.max()) if len(lens) else 1, 1)
            seq = seq[:, -w:]
            ar = torch.arange(w, device=seq.device)
            idx = (ar[None, :] + (w - lens)[:, None]) % w
            valid = ar[None, :] < lens[:, None]
            aligned = torch.where(valid, seq.gather(1, idx), 0)
            t = None
            if times is not None:
                times = times[:, -self.max_len:][:, -w:]
                t = torch.where(valid, times.gather(1, idx), 0)
                # padding positions repeat the last real time (never attended causally, but keeps
                # the bucket arithmetic finite)
                last = t.gather(1, (lens - 1).clamp(min=0)[:, None])
                t = torch.where(valid, t, last)
            return aligned, t, lens

        def score_all(self, seq: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
            scores, _, _ = self.score_parts(seq, times)
            return scores

        def score_parts(self, seq: torch.Tensor, times: torch.Tensor | None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            """(scores (B, n_items + 1), gate weights (B, K), features (B, N_FEATURES))."""
            aligned, t, lens = self._left(seq, times)
            h = self.encode(aligned, t)
            rows = torch.arange(len(seq), device=seq.device)
            last = (lens - 1).clamp(min=0)
            hl = h[rows, last]
            scores = hl @ self.item_emb.weight.T
            prior, wts, feats = self.prior_logits(aligned, t, hl, (rows, last), scores[:, 1:],
                                                  full=True)
            if prior is not None:
                scores = scores + prior
            scores[:, 0] = float("-inf")
            return scores, wts, feats

    return ShiftAwareNet()


# ----------------------------------------------------------------------------- Protocol wrapper


class ShiftAware:
    """Recommender Protocol wrapper. `item_topic` (n_items + 1 topic ids, -1 = none; e.g.
    interest.topics.Topics.aligned(split.item_map)) is needed for the topic prior and the
    interest-gate features; without it every item is in one topic (those signals are inert).
    `init_from`: a saved SASRec folder whose weights warm-start the shared layers."""

    name = "shiftaware"

    def __init__(self, config: ShiftAwareConfig | None = None, *,
                 item_topic: np.ndarray | None = None, init_from: str | Path | None = None,
                 checkpoint_dir: str | Path | None = None, resume: bool = False,
                 progress: Any = None, **overrides: Any) -> None:
        cfg = config or ShiftAwareConfig()
        self.config: ShiftAwareConfig = apply_overrides(cfg, overrides, "shiftaware")
        self.item_topic = None if item_topic is None else np.asarray(item_topic, np.int64)
        self.init_from = None if init_from is None else str(init_from)
        self.checkpoint_dir = checkpoint_dir
        self.resume = resume
        self.progress = progress
        self.net: Any = None
        self.n_items: int | None = None
        self.n_topics: int | None = None
        self.result: TrainResult | None = None
        self.data_fingerprint: str | None = None

    def _build(self, n_items: int, n_topics: int, n_trend_rows: int) -> Any:
        from shiftrec.train.trainer import seed_everything

        seed_everything(self.config.train.seed)
        self.n_items, self.n_topics = n_items, n_topics
        self.net = build_net(n_items, n_topics, n_trend_rows, self.config)
        return self.net

    def _tables(self, split: SeqSplit) -> dict[str, np.ndarray]:
        n1 = split.n_items + 1
        topics = self.item_topic if self.item_topic is not None else np.full(n1, -1, np.int64)
        if len(topics) != n1:
            raise InputError(f"item_topic has {len(topics)} entries but the split has "
                             f"{split.n_items} items (+ padding = {n1})")
        it, T = topic_index(topics)
        if self.config.trend_prior:
            trend, t0, bsec = trend_tables(split.train.items, split.train.times, split.n_items,
                                           self.config)
        else:
            trend, t0, bsec = np.zeros((0, 1, n1), np.float32), 0, DAY
        flow = flow_table(split.train, it, T)
        return {"item_topic": it, "n_topics": np.int64(T), "flow": flow,
                "trend_log": trend, "trend_origin": np.array([t0, bsec], np.int64)}

    def build_for(self, split: SeqSplit) -> Any:
        """A fresh (untrained) net with the data-side tables of `split`."""
        import torch

        tab = self._tables(split)
        net = self._build(split.n_items, int(tab["n_topics"]), tab["trend_log"].shape[1])
        with torch.no_grad():
            for k in ("item_topic", "trend_log", "trend_origin", "flow"):
                getattr(net, k).copy_(torch.from_numpy(np.asarray(tab[k])))
        return net

    def fit(self, split: SeqSplit) -> ShiftAware:

        from shiftrec.train.batches import CausalBatches
        from shiftrec.train.trainer import train

        cfg = self.config
        net = self.build_for(split)
        if self.init_from is not None:
            warm_start(net, self.init_from)
        src = CausalBatches(split.train, cfg.max_len, cfg.stride, cfg.bucket, with_times=True)
        valid = split.valid if len(split.valid) else None
        self.result = train(net, cfg.train, src, valid, checkpoint_dir=self.checkpoint_dir,
                            resume=self.resume, progress=self.progress)
        net.to("cpu")
        self.data_fingerprint = split.meta.get("fingerprint")
        return self

    def _check(self) -> None:
        if self.net is None:
            raise ArtifactError("shiftaware model is not fitted")

    def score(self, histories: list[np.ndarray], times: list[np.ndarray] | None = None) -> np.ndarray:
        self._check()
        if times is not None and len(times) != len(histories):
            raise InputError(f"times has {len(times)} rows but histories has {len(histories)}")
        return score_module(self.net, histories, times, self.config.max_len)

    def explain_gate(self, histories: list[np.ndarray], times: list[np.ndarray] | None = None
                     ) -> dict[str, np.ndarray]:
        """Per history: the gate's prior weights (B, K) and features (B, len(FEATURE_NAMES));
        `prior_names` / `feature_names` name the columns."""
        import torch

        from shiftrec.train.batches import pad_left

        self._check()
        L = self.config.max_len
        seq = torch.from_numpy(pad_left(histories, L))
        t = None if times is None else torch.from_numpy(pad_left(times, L))
        self.net.eval()
        with torch.no_grad():
            _, w, f = self.net.score_parts(seq, t)
        return {"weights": w.numpy(), "features": f.numpy(),
                "prior_names": np.array(prior_names(self.config)),
                "feature_names": np.array(FEATURE_NAMES)}

    def save(self, path: str | Path) -> None:
        if self.net is None:
            raise ArtifactError("shiftaware model is not fitted: nothing to save")
        c = self.config
        save_torch_artifact(path, self.net, self.name, n_items=self.n_items, n_topics=self.n_topics,
                            trend_rows=int(self.net.trend_log.shape[1]), hidden=c.hidden,
                            layers=c.layers, heads=c.heads, max_len=c.max_len,
                            priors=prior_names(c), config=to_dict(c), init_from=self.init_from,
                            data_fingerprint=self.data_fingerprint,
                            training=self.result.to_dict() if self.result else None)

    @classmethod
    def load(cls, path: str | Path) -> ShiftAware:
        from shiftrec.config import from_dict

        man, tensors = read_torch_artifact(path, cls.name)
        try:
            cfg = from_dict(ShiftAwareConfig, man["config"], where=f"{path}: config")
            n_items, n_topics, rows = int(man["n_items"]), int(man["n_topics"]), int(man["trend_rows"])
        except KeyError as e:
            raise ArtifactError(f"manifest lacks {e}", path=path) from None
        for key in ("hidden", "layers", "heads", "max_len"):
            if man.get(key) != getattr(cfg, key):
                raise ArtifactError(f"manifest {key}={man.get(key)} disagrees with its config "
                                    f"{key}={getattr(cfg, key)}", path=path)
        check_shapes(tensors, {"item_emb.weight": (n_items + 1, cfg.hidden),
                               "item_topic": (n_items + 1,),
                               "trend_log": (cfg.n_trend, rows, n_items + 1)}, path,
                     {"item_emb.weight": "item embedding (n_items + 1, hidden)",
                      "item_topic": "item topics (n_items + 1)",
                      "trend_log": "trend table (n_trend, rows, n_items + 1)"})
        if len(tensors["item_topic"]) and int(tensors["item_topic"].max()) >= n_topics:
            raise ArtifactError(f"item topics exceed n_topics={n_topics}", path=path)
        model = cls(cfg)
        model._build(n_items, n_topics, rows)
        load_state_strict(model.net, tensors, path)
        model.net.eval()
        model.init_from = man.get("init_from")
        model.data_fingerprint = man.get("data_fingerprint")
        return model


def prior_names(cfg: ShiftAwareConfig) -> list[str]:
    out = [f"trend_{h:g}d" for h in cfg.trend_half_lives_days] if cfg.trend_prior else []
    return out + (["recent_topic"] if cfg.topic_prior else []) + \
        (["topic_flow"] if cfg.flow_prior else [])


def warm_start(net: Any, path: str | Path) -> list[str]:
    """Copy the layers a saved SASRec shares with `net` (same names and shapes); returns them."""
    import torch

    man, tensors = read_torch_artifact(path, "sasrec")
    if int(man.get("n_items", -1)) != net.n_items:
        raise ArtifactError(f"SASRec checkpoint has {man.get('n_items')} items, the model has "
                            f"{net.n_items}", path=path)
    own = net.state_dict()
    copied = []
    with torch.no_grad():
        for k, v in tensors.items():
            if k in own and tuple(own[k].shape) == tuple(v.shape):
                own[k].copy_(v)
                copied.append(k)
    if "item_emb.weight" not in copied:
        raise ArtifactError("SASRec checkpoint does not match this model's item embedding", path=path)
    return copied
