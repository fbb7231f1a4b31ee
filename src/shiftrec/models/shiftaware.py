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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shiftrec.config import to_dict
from shiftrec.data.splits import SeqSplit
from shiftrec.errors import ArtifactError, ConfigError, InputError
from shiftrec.models.artifact import item_map_fingerprint
from shiftrec.models.shiftaware_features import DAY, FEATURE_NAMES, N_FEATURES, GateMode
from shiftrec.models.torch_base import (
    apply_overrides,
    check_shapes,
    load_state_strict,
    read_torch_artifact,
    save_torch_artifact,
)
from shiftrec.train.trainer import Phase, TrainConfig, TrainResult, score_module

__all__ = ["DAY", "FEATURE_NAMES", "N_FEATURES", "GateMode", "ShiftAware", "ShiftAwareConfig"]



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
    """The ShiftAware nn.Module (models.shiftaware_net; imports torch lazily)."""
    from shiftrec.models.shiftaware_net import ShiftAwareNet

    return ShiftAwareNet(n_items, n_topics, n_trend_rows, cfg)


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
        self.item_keys: str | None = None  # fingerprint of the item map it was trained on

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
            warm_start(net, self.init_from, item_map_fingerprint(split))
        src = CausalBatches(split.train, cfg.max_len, cfg.stride, cfg.bucket, with_times=True)
        valid = split.valid if len(split.valid) else None
        self.result = train(net, cfg.train, src, valid, checkpoint_dir=self.checkpoint_dir,
                            resume=self.resume, progress=self.progress)
        net.to("cpu")
        self.data_fingerprint = split.meta.get("fingerprint")
        self.item_keys = item_map_fingerprint(split)
        return self

    def _check(self) -> None:
        if self.net is None:
            raise ArtifactError("shiftaware model is not fitted")

    def score(self, histories: list[np.ndarray], times: list[np.ndarray] | None = None) -> np.ndarray:
        self._check()
        if times is not None and len(times) != len(histories):
            raise InputError(f"times has {len(times)} rows but histories has {len(histories)}")
        return score_module(self.net, histories, times, self.config.max_len,
                            threads=self.config.train.threads)

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
                            item_keys_hash=self.item_keys,
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
        model.item_keys = man.get("item_keys_hash")
        return model


def prior_names(cfg: ShiftAwareConfig) -> list[str]:
    out = [f"trend_{h:g}d" for h in cfg.trend_half_lives_days] if cfg.trend_prior else []
    return out + (["recent_topic"] if cfg.topic_prior else []) + \
        (["topic_flow"] if cfg.flow_prior else [])


def warm_start(net: Any, path: str | Path, item_keys: str | None = None) -> list[str]:
    """Copy the layers a saved SASRec shares with `net` (same names and shapes); returns them.
    `item_keys` (the split's item map fingerprint) must match the SASRec's when given."""
    import torch

    man, tensors = read_torch_artifact(path, "sasrec")
    if int(man.get("n_items", -1)) != net.n_items:
        raise ArtifactError(f"SASRec checkpoint has {man.get('n_items')} items, the model has "
                            f"{net.n_items}", path=path)
    theirs = man.get("item_keys_hash")
    if item_keys is not None and theirs is not None and theirs != item_keys:
        raise ArtifactError(f"SASRec checkpoint was trained on another item map (item_keys_hash "
                            f"{theirs}) than this split ({item_keys})", path=path)
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
