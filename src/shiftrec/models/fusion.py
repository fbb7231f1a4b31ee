"""Shift fusion: a sequence model that follows the platform's item-level migration flows.

    score(i | h) = log softmax(base(h))_i + w[b(h)] * log p_flow(i | h)

- ``base`` is any recommender of the registry (SASRec, ShiftAware, ...): its scores are read as
  logits over all items.
- ``p_flow(i | h)`` is where users who just had the history's recent items went next: item-to-item
  transitions counted on the training sequences (the item-kNN of models.itemknn: directed
  co-occurrence within a window, recency-weighted over the history), normalised per history and
  mixed with a uniform share ``smoothing``. It is the item-level twin of interest.flows'
  topic -> topic migration matrix, and it is what lets a user who is leaving their topics be
  shown the items people move *to*.
- ``b(h)`` is the interest gate, fed by the shift detector's statistic: the Jensen-Shannon
  divergence between the fast- and the slow-decay topic profile of the history (as in
  interest.shifts and models.shiftaware), cut into ``n_bins`` bins at quantiles of the
  validation users. Each bin gets its own weight ``w``, chosen on the validation split (NDCG@10
  of the bin's users; never the test split), so users whose interest is on the move can lean on
  the flows more than users whose interest is settled.

fit() fits the base model (unless ``base_fitted``), counts the flows on the training sequences
and selects the weights on validation. Artifacts: manifest.json (weights, bin edges, config),
item_topic.npz, base/ and flow/ (the components' own artifacts).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shiftrec.config import from_dict, to_dict
from shiftrec.data.splits import SeqSplit
from shiftrec.errors import ArtifactError, ConfigError, InputError
from shiftrec.manifest import atomic_write_bytes
from shiftrec.models.artifact import (
    check_model_split,
    read_model_folder,
    save_model_folder,
    split_fields,
)
from shiftrec.models.itemknn import ItemKNN

#: the validation batches' base and flow scores (8 bytes an item and user) are kept for the
#: grid-growth pass when they take at most this much memory; past it they are computed again
_KEEP_PARTS_BYTES = 512 << 20


@dataclass(frozen=True)
class FusionConfig:
    n_bins: int = 3  # bins of the shift statistic, each with its own flow weight
    weights: tuple[float, ...] = (0.0, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 12.0)
    smoothing: tuple[float, ...] = (0.02, 0.2)  # uniform share in p_flow, chosen on validation
    fast_half_life: float = 2.0  # events
    slow_half_life: float = 20.0
    min_bin_users: int = 200  # a bin with fewer validation users takes the overall best weight
    max_len: int = 50
    batch_size: int = 512
    # validation metric the weights are chosen on (recall@K, ndcg@K, mrr@K or mrr): NDCG@10
    # favours the head of the list; recall@50 keeps more of the base model's deep recall
    select_metric: str = "ndcg@10"
    # when a chosen weight is the top of the grid, the grid grows by this factor (up to
    # `max_grow` times) until validation stops improving, so the choice is never clipped
    grow_factor: float = 1.5
    max_grow: int = 8

    def __post_init__(self) -> None:
        if self.n_bins < 1:
            raise ConfigError(f"fusion: n_bins must be >= 1, got {self.n_bins}")
        if not self.weights or min(self.weights) < 0:
            raise ConfigError("fusion: weights must be a non-empty list of values >= 0")
        if not self.smoothing or not all(0 < s <= 1 for s in self.smoothing):
            raise ConfigError("fusion: smoothing values must be in (0, 1]")
        if self.fast_half_life <= 0 or self.slow_half_life <= 0:
            raise ConfigError("fusion: half-lives must be > 0")
        if self.grow_factor <= 1 or self.max_grow < 0:
            raise ConfigError("fusion: grow_factor must be > 1 and max_grow >= 0")
        from shiftrec.evaluate.metrics import per_user_metric

        per_user_metric(np.ones(1), self.select_metric)  # an unknown metric is a ConfigError


def shift_statistic(histories: list[np.ndarray], item_topic: np.ndarray, fast_half_life: float,
                    slow_half_life: float, max_len: int = 50) -> np.ndarray:
    """JSD (bits) between the fast- and slow-decay topic profiles of each history (0 when the
    history is empty or every item shares one topic)."""
    from shiftrec.interest.profiles import DecayUnit, ProfileConfig, flatten_histories, topic_mass
    from shiftrec.interest.shifts import jsd_rows

    it = np.asarray(item_topic, np.int64)
    T = max(int(it.max(initial=0)) + 2, 2)  # topic -1 (none) -> its own column T - 1
    indptr, items, _ = flatten_histories([np.asarray(h, np.int64)[-max_len:] for h in histories], None)
    if len(items) == 0:
        return np.zeros(len(histories))
    topics = np.where(it[items] < 0, T - 1, it[items])
    prof = []
    for hl in (fast_half_life, slow_half_life):
        m, _ = topic_mass(indptr, topics, None, T, ProfileConfig(half_life=hl,
                                                                 decay_unit=DecayUnit.EVENTS))
        m += 1.0 / T
        prof.append(m / m.sum(1, keepdims=True))
    out = jsd_rows(prof[0], prof[1])
    out[np.diff(indptr) == 0] = 0.0
    return out


def flow_logp(raw: np.ndarray, smoothing: float) -> np.ndarray:
    """log p_flow from item-kNN scores (B, n_items + 1); column 0 (padding) is 0, so adding it
    leaves the base's padding score as it is."""
    s = np.maximum(np.nan_to_num(raw[:, 1:], neginf=0.0), 0.0).astype(np.float64)
    tot = s.sum(1, keepdims=True)
    n = s.shape[1]
    p = np.where(tot > 0, (1.0 - smoothing) * s / np.where(tot > 0, tot, 1.0) + smoothing / n,
                 1.0 / n)
    out = np.empty(raw.shape, np.float32)
    out[:, 0] = 0.0
    out[:, 1:] = np.log(p)
    return out


def log_softmax(scores: np.ndarray) -> np.ndarray:
    x = np.asarray(scores, np.float64)
    finite = np.isfinite(x)
    m = np.where(finite, x, -np.inf).max(1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    z = np.log(np.where(finite, np.exp(x - m), 0.0).sum(1, keepdims=True))
    return np.where(finite, x - m - z, -np.inf).astype(np.float32)


class ShiftFusion:
    """A base recommender fused with the item-level migration prior, gated by the shift
    statistic (see the module docstring). `item_topic`: (n_items + 1) topic ids (-1 = none),
    e.g. interest.topics.Topics.aligned(split.item_map); without it the gate has one bin."""

    name = "shiftfusion"

    def __init__(self, base: Any, config: FusionConfig | None = None, *,
                 item_topic: np.ndarray | None = None, base_fitted: bool = False,
                 flow: ItemKNN | None = None, **overrides: Any) -> None:
        from shiftrec.models.torch_base import apply_overrides

        self.config: FusionConfig = apply_overrides(config or FusionConfig(), overrides, "shiftfusion")
        self.base = base
        self.base_fitted = base_fitted
        self.flow = flow or ItemKNN()
        self.item_topic = None if item_topic is None else np.asarray(item_topic, np.int64)
        self.edges: np.ndarray | None = None
        self.bin_weights: np.ndarray | None = None
        self.smoothing: float | None = None
        self.selection: dict[str, Any] = {}
        self.n_items: int | None = None
        self.data_fingerprint: str | None = None
        self.item_keys: str | None = None

    # ------------------------------------------------------------------ parts
    def _topics(self, n_items: int) -> np.ndarray:
        if self.item_topic is None:
            return np.zeros(n_items + 1, np.int64)
        if len(self.item_topic) != n_items + 1:
            raise InputError(f"item_topic has {len(self.item_topic)} entries but the model has "
                             f"{n_items} items (+ padding = {n_items + 1})")
        return self.item_topic

    def _parts(self, histories: list[np.ndarray], times: list[np.ndarray] | None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(log softmax of the base, raw flow scores, shift statistic) for a batch."""
        assert self.n_items is not None
        base = log_softmax(self.base.score(histories, times))
        raw = self.flow.score(histories, times)
        stat = shift_statistic(histories, self._topics(self.n_items), self.config.fast_half_life,
                               self.config.slow_half_life, self.config.max_len)
        return base, raw, stat

    def _bins(self, stat: np.ndarray) -> np.ndarray:
        assert self.edges is not None
        return np.searchsorted(self.edges, stat, side="right")

    # ------------------------------------------------------------------ Protocol
    def fit(self, split: SeqSplit) -> ShiftFusion:
        cfg = self.config
        if not self.base_fitted:
            self.base.fit(split)
        else:  # a saved base must have been trained on this split's item map
            check_model_split(self.base, split)
        width = np.asarray(self.base.score([split.train[0][:1]] if len(split.train) else
                                           [np.zeros(0, np.int64)])).shape[1]
        if width != split.n_items + 1:
            raise InputError(f"the base model scores {width - 1} items but the split has "
                             f"{split.n_items}: was it trained on another dataset?")
        self.flow.fit(split)
        self.n_items = split.n_items
        f = split_fields(split)
        self.data_fingerprint, self.item_keys = f["data_fingerprint"], f["item_keys_hash"]
        es = split.valid
        if len(es) == 0:
            raise InputError("shiftfusion selects its weights on validation, but the split has "
                             "no validation user")
        W = np.asarray(sorted(set(cfg.weights)), np.float64)
        S = np.asarray(cfg.smoothing, np.float64)
        kept = None  # the batches' parts, for the growth pass to reuse
        if len(es) * (split.n_items + 1) * 8 <= _KEEP_PARTS_BYTES:
            kept = list(self._valid_parts(es))
        gain, stat = self._valid_gains(es, W, S, kept if kept is not None else
                                       self._valid_parts(es))
        qs = np.linspace(0, 1, cfg.n_bins + 1)[1:-1]
        self.edges = np.unique(np.quantile(stat, qs)) if len(qs) else np.zeros(0)
        bins = self._bins(stat)
        nb = len(self.edges) + 1
        best_total, best = self._choose(gain, bins, nb, len(S))
        grown = 0
        if best[1].max() == len(W) - 1 and cfg.max_grow and W[-1] > 0:
            # the top of the grid won: score every growth step in ONE more validation pass (on
            # the first pass's base and flow scores when kept, else computed again), then grow
            # step by step as long as a choice still sits at the top
            extra = W[-1] * cfg.grow_factor ** np.arange(1, cfg.max_grow + 1)
            more, _ = self._valid_gains(es, extra, S, kept if kept is not None else
                                        self._valid_parts(es))
            n0 = len(W)
            W, gain = np.concatenate([W, extra]), np.concatenate([gain, more], axis=2)
            while True:
                grown += 1
                n = n0 + grown
                best_total, best = self._choose(gain[:, :, :n], bins, nb, len(S))
                if best[1].max() < n - 1 or grown >= cfg.max_grow:
                    break
            W, gain = W[:n0 + grown], gain[:, :, :n0 + grown]
        si, ws = best
        self.smoothing = float(S[si])
        self.bin_weights = W[ws]
        m = cfg.select_metric
        self.selection = {
            "on": "validation", "metric": m, "valid_users": len(es),
            f"valid_{m}_fused": best_total,
            f"valid_{m}_base": float(gain[:, si, 0].mean()) if W[0] == 0 else None,
            "weights_tried": [float(w) for w in W], "grid_grown": grown,
            "bin_users": [int((bins == b).sum()) for b in range(nb)],
            f"bin_{m}_by_weight": [[float(x) for x in gain[bins == b, si].mean(0)]
                                   if (bins == b).any() else [] for b in range(nb)]}
        return self

    def _valid_parts(self, es: Any) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """(first row, *_parts) of each `batch_size` validation users."""
        cfg = self.config
        for a in range(0, len(es), cfg.batch_size):
            rows = range(a, min(a + cfg.batch_size, len(es)))
            hist = [es.history[i][-cfg.max_len:] for i in rows]
            times = [es.history.times_of(i)[-cfg.max_len:] for i in rows]
            yield (a, *self._parts(hist, times))

    def _valid_gains(self, es: Any, W: np.ndarray, S: np.ndarray,
                     parts: Iterable[tuple[int, np.ndarray, np.ndarray, np.ndarray]]
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Per validation user, smoothing and weight: the selection metric of the fused ranking
        (from the batches' `parts`, see _valid_parts); and each user's shift statistic."""
        from shiftrec.evaluate.metrics import mixed_metric

        cfg = self.config
        gain = np.zeros((len(es), len(S), len(W)))
        stat = np.zeros(len(es))
        for a, base, raw, st in parts:
            n = len(st)
            stat[a:a + n] = st
            tgt = es.target[a:a + n]
            for si, sm in enumerate(S):
                gain[a:a + n, si] = mixed_metric(base, flow_logp(raw, float(sm)), W, tgt, cfg.select_metric)
        return gain, stat

    def _choose(self, gain: np.ndarray, bins: np.ndarray, nb: int, n_smooth: int
                ) -> tuple[float, tuple[int, np.ndarray]]:
        """The smoothing and per-bin weight indices with the best mean validation metric (a bin
        with fewer than min_bin_users users takes the overall best weight)."""
        best_total, best = -1.0, None
        for si in range(n_smooth):
            overall = int(gain[:, si].mean(0).argmax())
            ws = np.full(nb, overall)
            for b in range(nb):
                m = bins == b
                if m.sum() >= self.config.min_bin_users:
                    ws[b] = int(gain[m, si].mean(0).argmax())
            total = float(gain[np.arange(len(gain)), si, ws[bins]].mean())
            if total > best_total:
                best_total, best = total, (si, ws)
        assert best is not None
        return best_total, best

    def _check(self) -> None:
        if self.bin_weights is None or self.n_items is None:
            raise ArtifactError("shiftfusion model is not fitted")

    def score(self, histories: list[np.ndarray], times: list[np.ndarray] | None = None) -> np.ndarray:
        self._check()
        assert self.bin_weights is not None and self.smoothing is not None
        base, raw, stat = self._parts(histories, times)
        w = self.bin_weights[self._bins(stat)].astype(np.float32)[:, None]
        out = base + w * flow_logp(raw, self.smoothing)
        out[:, 0] = -np.inf
        return out.astype(np.float32)

    def explain(self, histories: list[np.ndarray], times: list[np.ndarray] | None = None
                ) -> dict[str, np.ndarray]:
        """Per history: the shift statistic, its gate bin and the flow weight used."""
        self._check()
        assert self.bin_weights is not None
        stat = shift_statistic(histories, self._topics(self.n_items or 0), self.config.fast_half_life,
                               self.config.slow_half_life, self.config.max_len)
        b = self._bins(stat)
        return {"shift_statistic": stat, "bin": b, "flow_weight": self.bin_weights[b]}

    def save(self, path: str | Path) -> None:
        import io

        self._check()
        buf = io.BytesIO()
        np.savez(buf, item_topic=self._topics(self.n_items or 0))

        def write(d: Path) -> None:
            self.base.save(d / "base")
            self.flow.save(d / "flow")
            atomic_write_bytes(d / "item_topic.npz", buf.getvalue())

        save_model_folder(
            path, write, model=self.name, n_items=self.n_items, config=to_dict(self.config),
            base_model=getattr(self.base, "name", type(self.base).__name__),
            edges=[float(x) for x in (self.edges if self.edges is not None else [])],
            bin_weights=[float(x) for x in self.bin_weights],  # type: ignore[union-attr]
            smoothing=self.smoothing, selection=self.selection,
            has_item_topic=self.item_topic is not None,
            data_fingerprint=self.data_fingerprint, item_keys_hash=self.item_keys)

    @classmethod
    def load(cls, path: str | Path, load_base: Callable[[Path], Any] | None = None) -> ShiftFusion:
        """Strict load. `load_base` loads the saved base model; by default the sequence
        models a fusion can sit on (this module never imports the registry that lists it)."""
        load_base = load_base or _load_base
        p, man = read_model_folder(path, cls.name)
        try:
            cfg = from_dict(FusionConfig, man["config"], where=f"{p}: config")
            n_items, edges, weights = int(man["n_items"]), man["edges"], man["bin_weights"]
            smoothing = float(man["smoothing"])
        except KeyError as e:
            raise ArtifactError(f"manifest lacks {e}", path=p) from None
        if len(weights) != len(edges) + 1:
            raise ArtifactError(f"{len(weights)} bin weights for {len(edges)} bin edges", path=p)
        z = np.load(p / "item_topic.npz", allow_pickle=False)
        topics = z["item_topic"]
        if len(topics) != n_items + 1:
            raise ArtifactError(f"item_topic.npz has {len(topics)} rows, expected {n_items + 1}", path=p)
        base = load_base(p / "base")
        flow = ItemKNN.load(p / "flow")
        for part, n in (("base", getattr(base, "n_items", n_items)), ("flow", flow.n_items)):
            if n is not None and n != n_items:
                raise ArtifactError(f"{part} model has {n} items, the fusion has {n_items}", path=p)
        m = cls(base, cfg, item_topic=topics if man.get("has_item_topic") else None,
                base_fitted=True, flow=flow)
        m.n_items, m.edges = n_items, np.asarray(edges, np.float64)
        m.bin_weights, m.smoothing = np.asarray(weights, np.float64), smoothing
        m.selection, m.data_fingerprint = man.get("selection", {}), man.get("data_fingerprint")
        m.item_keys = man.get("item_keys_hash")
        return m


def _load_base(path: Path) -> Any:
    """Load a saved base model of one of the kinds a fusion is built on."""
    from shiftrec.models.artifact import read_manifest_file
    from shiftrec.models.popularity import Popularity
    from shiftrec.models.sasrec import SASRec
    from shiftrec.models.shiftaware import ShiftAware
    from shiftrec.models.transfer import TransferRec

    kinds = {"popularity": Popularity, "itemknn": ItemKNN, "sasrec": SASRec,
             "transfer": TransferRec, "shiftaware": ShiftAware}
    _, man = read_manifest_file(path)
    name = man.get("model")
    if name not in kinds:
        raise ArtifactError(f"base model '{name}' cannot be fused; valid: {', '.join(kinds)}",
                            path=path)
    return kinds[name].load(path)
