"""Recommendations with reasons from a servable run (see pipelines.run for its layout).

`Recommender.load(run_dir)` loads the model and every interest signal once; `.recommend(user_id
| history, k=10, exclude_seen=True, explain=True)` answers. Live events (`observe`) extend the
user's history, topic profile and shift-detector state at once, so the next answer reflects them.

Reasons come from the signals that actually enter the answer, each present when and only when
its signal is:

- ``flow``: the model scores item flows (itemknn, shiftfusion) and a history item X has a flow to
  the item ("shoppers who bought X went on to Y"); X is the history item contributing most;
- ``shift``: the user's most recent detected shift lies within their last `recent_events` events
  and the item's topic is one the shift entered ("you recently moved from A to B (around DATE)");
- ``topic``: the item's topic holds at least `topic_min_share` of the user's current topic
  profile ("matches your current interest in A"); for the topic-profile model, always, naming
  the topic contributing most to the item's score;
- ``popular``: cold users (no known history item) are answered by training popularity, and the
  popularity model's own answers ("popular now");
- ``sequence``: a sequence model's answer for which none of the above holds ("follows from your
  last N items (MODEL)") - the model's score is then the only signal.

Large catalogues (serve.retrieval): for models whose scores are a user vector times item
vectors (SASRec and the transfer models expose `query_vectors`/`item_vectors`), from
`AnnConfig.threshold` items on (mode auto; or always with mode on) a FAISS index proposes
candidates that are re-scored exactly (the same dot products as full scoring), then seen items
are excluded and reasons drawn as above. Item-kNN, popularity, topic profile and ShiftFusion
(its base log-softmax needs every item's score) keep exact full scoring. A model with the
repeat/explore gate (models.repeat) scores through it in full scoring (log-probabilities) but
not through the index (dot products): with the history left out the two rank alike, and a query
that keeps its history is always scored in full; so a `score` compares within one answer, not
across answers.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from shiftrec.errors import ArtifactError, ConfigError, InputError
from shiftrec.manifest import read_json, require_complete, sha256_file

MAX_K = 1000
#: models that score items from their text alone: POST /v1/items adds items to them at once
ITEM_TEXT_MODELS = ("transfer", "textsim")


def new_items_refused(model_name: str) -> str:
    """Why a model outside ITEM_TEXT_MODELS cannot take new catalogue items (library and API)."""
    return (f"model '{model_name}' scores only the item ids it was trained on: new items need "
            f"retraining (the text models {' and '.join(repr(m) for m in ITEM_TEXT_MODELS)} embed "
            "new items at once)")


@dataclass
class Reason:
    kind: str
    text: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "text": self.text}


@dataclass
class RecItem:
    item_id: str
    domain: str
    title: str | None
    category: str | None
    price: float | None
    score: float
    reasons: list[Reason] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "domain": self.domain, "title": self.title,
                "category": self.category, "price": self.price, "score": self.score,
                "reasons": [r.to_dict() for r in self.reasons]}


@dataclass
class Recommendations:
    user_id: str | None
    model: str
    items: list[RecItem]
    shift: dict[str, Any]
    cold: bool
    ignored: list[str] = field(default_factory=list)  # unknown item ids of a given history

    def to_dict(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "model": self.model,
                "items": [i.to_dict() for i in self.items], "shift": self.shift,
                "cold": self.cold, "ignored_items": self.ignored}


@dataclass
class Query:
    """One recommendation request: a user id, or (user None) an anonymous history."""

    user: str | None = None
    history: list[str] | None = None
    k: int = 10
    exclude_seen: bool = True
    explain: bool = True


@dataclass
class _User:
    items: list[int]
    times: list[int]
    det_state: Any = None  # interest.shifts.ShiftState after `det_n` events
    det_n: int = 0
    shifts: list[Any] = field(default_factory=list)  # ShiftEvent, event_index in the full history


def _date(t: int) -> str:
    return datetime.fromtimestamp(int(t), UTC).date().isoformat()


def _join(names: list[str]) -> str:
    if not names:
        return "no single topic"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


class Recommender:
    """A loaded servable run. Thread-safe: reads take snapshots, writes hold a lock."""

    def __init__(self, run_dir: Path, manifest: dict[str, Any], model: Any, keys: np.ndarray,
                 catalogue: pl.DataFrame, topics: Any, flows: dict[str, Any], item_flows: Any,
                 users: dict[str, tuple[np.ndarray, np.ndarray]], popularity: np.ndarray,
                 shift_config: Any, *, encoder: Any = None, recent_events: int = 10,
                 topic_min_share: float = 0.25) -> None:
        from shiftrec.interest.profiles import ProfileConfig
        from shiftrec.interest.shifts import ShiftDetector

        self.run_dir = run_dir
        self.manifest = manifest
        self.model = model
        self.model_name = str(manifest.get("model"))
        self.keys = np.asarray(keys, dtype=object)
        self.key_index = {str(k): i for i, k in enumerate(self.keys)}
        self.key_index.pop("<pad>", None)
        cat = catalogue
        self.item_ids = ["<pad>", *cat["item_id"].to_list()]
        self.domains = ["", *cat["domain"].to_list()]
        self.titles = [None, *cat["title"].to_list()]
        self.categories = [None, *cat["category"].to_list()]
        self.prices = [None, *cat["price"].to_list()]
        self._rebuild_id_index()
        self.topics = topics
        self.topic_names: list[str] = list(topics.names)
        self.item_topic = topics.aligned(_KeyMap(self.keys))
        self.flows = flows
        self.item_flows = item_flows
        self.popularity = np.asarray(popularity, np.float32).copy()
        self.popularity[0] = -np.inf
        self.shift_config = shift_config
        self.detector = ShiftDetector(len(self.topic_names), shift_config)
        self.profile_cfg = ProfileConfig()
        tt = self.item_topic
        counts = np.bincount(tt[tt >= 0], minlength=len(self.topic_names)).astype(np.float64) + 1
        self.topic_prior = counts / counts.sum()
        self.recent_events = recent_events
        self.topic_min_share = topic_min_share
        self.encoder = encoder
        self._base = users
        self._users: dict[str, _User] = {}
        self._lock = threading.RLock()
        self.uses_flows = self.model_name in ("itemknn", "shiftfusion")
        self.is_sequence = self.model_name not in ("popularity", "itemknn", "topic_profile")
        self.ann: Any = None  # serve.retrieval.AnnRetriever when candidate retrieval is on
        self.ann_info: dict[str, Any] = {"active": False, "reason": "not set up"}
        self._pop_order: np.ndarray | None = None
        self._ann_lock = threading.Lock()  # FAISS: no search while items are added

    @property
    def factorised(self) -> bool:
        """Scores are query_vectors(history) @ item_vectors().T (candidate retrieval works)."""
        return hasattr(self.model, "query_vectors") and hasattr(self.model, "item_vectors")

    def setup_ann(self, cfg: Any = None) -> dict[str, Any]:
        """Turn candidate retrieval on or off per `cfg` (serve.retrieval.AnnConfig; default
        mode auto). Returns (and keeps in `ann_info`) what was decided and why."""
        from shiftrec.serve.retrieval import AnnConfig, AnnMode, config_summary, open_index

        cfg = cfg or AnnConfig()
        info: dict[str, Any] = {"config": config_summary(cfg), "items": self.n_items}
        self.ann, self._pop_order = None, None
        if not cfg.wanted(self.n_items):
            info |= {"active": False, "reason": "off" if cfg.mode == AnnMode.OFF else
                     f"{self.n_items:,} items < threshold {cfg.threshold:,}: exact full scoring"}
        elif not self.factorised:
            if cfg.mode == AnnMode.ON:
                raise ConfigError(f"--ann on: model '{self.model_name}' does not score items by "
                                  "a user vector times item vectors (only sasrec and the "
                                  "transfer models do); use --ann auto or off")
            info |= {"active": False, "reason": f"model '{self.model_name}' has no user x item "
                     "vector factorisation: exact full scoring"}
        else:
            vecs = self.model.item_vectors()
            self.ann, got = open_index(self.run_dir, vecs, cfg,
                                       self.manifest.get("fingerprints") or {})
            info |= {"active": True, "dim": int(vecs.shape[1]), "nlist": self.ann.nlist,
                     "nprobe": int(self.ann.index.nprobe), **got}
        self.ann_info = info
        return info

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, run_dir: str | Path, *, encoder: Any = None, verify: bool = True,
             ann: Any = None) -> Recommender:
        """Load a run folder written by `shiftrec.pipelines.run.write_run`. Every part's
        fingerprint is checked against the manifest (`verify`); a model trained on other data
        than the run's item map is refused with one line naming both fingerprints. `ann`: a
        serve.retrieval.AnnConfig (default: mode auto), see `setup_ann`."""
        from shiftrec.config import from_dict
        from shiftrec.interest.shifts import ShiftConfig
        from shiftrec.interest.topics import Topics
        from shiftrec.models.itemknn import ItemKNN
        from shiftrec.pipelines.run import RUN_KIND, folder_fingerprint, item_map_fingerprint

        p = require_complete(run_dir, "run folder")
        man = read_json(p / "manifest.json")
        if man.get("kind") != RUN_KIND:
            raise ArtifactError(f"manifest kind is '{man.get('kind')}', expected '{RUN_KIND}' "
                                "(write a run with `shiftrec package` or pipelines.run.write_run)",
                                path=p)
        fps = man.get("fingerprints") or {}
        keys = np.load(p / "item_map.npz", allow_pickle=False)["keys"].astype(object)
        got = item_map_fingerprint(keys)
        if got != fps.get("item_map"):
            raise ArtifactError(f"item map fingerprint {got} does not match the run manifest's "
                                f"{fps.get('item_map')}", path=p / "item_map.npz")
        mfp, dfp = man.get("model_data_fingerprint"), man.get("data_fingerprint")
        if mfp is not None and dfp is not None and mfp != dfp:
            raise ArtifactError(f"model trained on data {mfp} is served with data {dfp}", path=p)
        if verify:
            checks = {"model": lambda: folder_fingerprint(p / "model"),
                      "catalogue": lambda: sha256_file(p / "catalogue.parquet")[:32],
                      "topics": lambda: folder_fingerprint(p / "topics"),
                      "flows": lambda: sha256_file(p / "flows.json")[:32],
                      "item_flows": lambda: folder_fingerprint(p / "item_flows"),
                      "users": lambda: sha256_file(p / "users.npz")[:32],
                      "popularity": lambda: sha256_file(p / "popularity.npz")[:32],
                      "shift_config": lambda: sha256_file(p / "shift.json")[:32]}
            for part, fn in checks.items():
                have = fn()
                if have != fps.get(part):
                    raise ArtifactError(f"{part} fingerprint {have} does not match the run "
                                        f"manifest's {fps.get(part)} (file changed?)", path=p)
        model = load_any_model(p / "model")
        n_model = getattr(model, "n_items", None)
        if callable(n_model):
            n_model = None
        if n_model is not None and int(n_model) != len(keys) - 1:
            raise ArtifactError(f"model scores {n_model} items but the run's item map "
                                f"{got} has {len(keys) - 1}", path=p / "model")
        catalogue = pl.read_parquet(p / "catalogue.parquet")
        if catalogue.height != len(keys) - 1:
            raise ArtifactError(f"catalogue has {catalogue.height} rows, item map {len(keys) - 1}",
                                path=p / "catalogue.parquet")
        topics = Topics.load(p / "topics")
        z = np.load(p / "users.npz", allow_pickle=False)
        uids, indptr, items, times = z["user_ids"], z["indptr"], z["items"], z["times"]
        users = {str(u): (items[indptr[i]:indptr[i + 1]], times[indptr[i]:indptr[i + 1]])
                 for i, u in enumerate(uids.tolist())}
        pop = np.load(p / "popularity.npz", allow_pickle=False)["counts"]
        shift_cfg = from_dict(ShiftConfig, read_json(p / "shift.json"), where=f"{p}: shift.json")
        if man.get("model") == "shiftfusion":
            item_flows = model.flow
        elif man.get("model") == "itemknn":
            item_flows = model
        else:
            item_flows = ItemKNN.load(p / "item_flows")
        rec = cls(p, man, model, keys, catalogue, topics, read_json(p / "flows.json"),
                  item_flows, users, pop, shift_cfg, encoder=encoder)
        rec.setup_ann(ann)
        return rec

    # ------------------------------------------------------------------ ids
    def _rebuild_id_index(self) -> None:
        seen: dict[str, int] = {}
        dup: set[str] = set()
        for i in range(1, len(self.item_ids)):
            iid = str(self.item_ids[i])
            if iid in seen:
                dup.add(iid)
            seen[iid] = i
        for d in dup:
            seen.pop(d)
        self.id_index = seen

    @property
    def n_items(self) -> int:
        return len(self.keys) - 1

    def resolve(self, item_id: str) -> int | None:
        """Item index of a dataset item id (or of a "domain/item_id" key); None if unknown."""
        i = self.id_index.get(item_id)
        return i if i is not None else self.key_index.get(item_id)

    def has_user(self, user_id: str) -> bool:
        return user_id in self._users or user_id in self._base

    @property
    def n_users(self) -> int:
        return len(set(self._base) | set(self._users))

    def user_ids(self) -> list[str]:
        return sorted(set(self._base) | set(self._users))

    # ------------------------------------------------------------------ user state
    def _user(self, user_id: str) -> _User:
        u = self._users.get(user_id)
        if u is None:
            base = self._base.get(user_id)
            u = _User([int(x) for x in base[0]], [int(x) for x in base[1]]) if base is not None \
                else _User([], [])
            self._users[user_id] = u
        return u

    def _advance_detector(self, u: _User, user_id: str) -> None:
        from shiftrec.interest.shifts import ShiftEvent

        if u.det_state is None:
            u.det_state, u.det_n = self.detector.init_state(), 0
        for i in range(u.det_n, len(u.items)):
            k = int(self.item_topic[u.items[i]]) if u.items[i] < len(self.item_topic) else -1
            if k >= 0:
                u.det_state, ev = self.detector.update(u.det_state, k, u.times[i], user_id)
                if ev is not None:
                    u.shifts.append(ShiftEvent(ev.user, i, ev.time, ev.topics_left,
                                               ev.topics_entered, ev.magnitude, ev.confidence,
                                               ev.statistic))
        u.det_n = len(u.items)

    def observe(self, events: list[tuple[str, int, int]]) -> None:
        """Append live events (user_id, item index, unix seconds) in arrival order; the user's
        history, topic profile and shift state reflect them at once."""
        with self._lock:
            touched = {}
            for user_id, idx, t in events:
                u = self._user(user_id)
                u.items.append(int(idx))
                u.times.append(int(t))
                touched[user_id] = u
            for user_id, u in touched.items():
                if u.det_state is not None:  # keep a built detector state current
                    self._advance_detector(u, user_id)

    def snapshot(self, user_id: str) -> tuple[list[int], list[int], list[Any]]:
        """(history, times, shifts) of a user, the detector brought up to date."""
        with self._lock:
            if not self.has_user(user_id):
                return [], [], []
            u = self._user(user_id)
            self._advance_detector(u, user_id)
            return list(u.items), list(u.times), list(u.shifts)

    def _history_shifts(self, items: list[int], times: list[int]) -> list[Any]:
        from shiftrec.interest.explain import user_shifts

        tt = self.item_topic[np.asarray(items, np.int64)] if items else np.zeros(0, np.int64)
        return user_shifts(self.detector, tt, np.asarray(times, np.float64), "")

    # ------------------------------------------------------------------ signals
    def topic_probs(self, items: list[int], times: list[int]) -> np.ndarray:
        from shiftrec.interest.profiles import flatten_histories, topic_distribution, topic_mass

        indptr, it, t = flatten_histories([np.asarray(items, np.int64)],
                                          [np.asarray(times, np.int64)])
        mass, _ = topic_mass(indptr, self.item_topic[it], t, len(self.topic_names),
                             self.profile_cfg)
        return topic_distribution(mass, self.topic_prior, self.profile_cfg.alpha)[0]

    def _recent_shift(self, shifts: list[Any], n_hist: int) -> Any:
        if shifts and shifts[-1].event_index >= n_hist - self.recent_events:
            return shifts[-1]
        return None

    def topics_left(self, ev: Any, items: list[int]) -> list[int]:
        """The topics a shift left; when the detector fired before any topic had faded, the
        dominant topic of the history before the shift (not among those entered)."""
        if ev.topics_left:
            return list(ev.topics_left)
        before = self.item_topic[np.asarray(items[:ev.event_index], np.int64)]
        before = before[(before >= 0) & ~np.isin(before, list(ev.topics_entered))]
        if len(before) == 0:
            return []
        return [int(np.bincount(before).argmax())]

    def shift_summary(self, shifts: list[Any], items: list[int]) -> dict[str, Any]:
        ev = self._recent_shift(shifts, len(items))
        if ev is None:
            return {"shifted": False, "from": None, "to": None, "at": None}
        return {"shifted": True, "from": [self.topic_names[t] for t in self.topics_left(ev, items)],
                "to": [self.topic_names[t] for t in ev.topics_entered],
                "at": datetime.fromtimestamp(int(ev.time), UTC).isoformat()}

    def flow_sources(self, items: list[int], targets: np.ndarray) -> list[tuple[int, float]]:
        """Per target: (history item contributing most to its item-flow score, contribution);
        (-1, 0.0) when no history item flows to it. Same weights as ItemKNN.score."""
        f = self.item_flows
        cfg = f.config
        h = np.asarray(items, np.int64)[-cfg.max_history:]
        out = [(-1, 0.0)] * len(targets)
        if len(h) == 0 or f.sim is None:
            return out
        n = f.sim.shape[0]
        h = h[h < n]
        if len(h) == 0:
            return out
        w = cfg.recency_decay ** np.arange(len(h) - 1, -1, -1)
        tg = np.asarray(targets, np.int64)
        ok = tg < n
        sub = self._sim_block(h, tg[ok]) * w[:, None]  # (len(h), n_ok)
        best = sub.argmax(0) if sub.size else np.zeros(0, np.int64)
        vals = sub[best, np.arange(sub.shape[1])] if sub.size else np.zeros(0)
        j = 0
        for i in range(len(tg)):
            if ok[i]:
                if vals[j] > 0:
                    out[i] = (int(h[best[j]]), float(vals[j]))
                j += 1
        return out

    def _sim_block(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Dense sim[rows][:, cols] read straight from the CSR arrays (scipy's fancy
        indexing costs more than the few entries it returns)."""
        sim = self.item_flows.sim
        out = np.zeros((len(rows), len(cols)), np.float64)
        if not len(rows) or not len(cols) or not hasattr(sim, "indptr"):
            if len(rows) and len(cols):
                out[:] = sim[rows].toarray()[:, cols]
            return out
        ip = sim.indptr
        starts, ends = ip[rows], ip[rows + 1]
        lens = ends - starts
        total = int(lens.sum())
        if total == 0:
            return out
        row_of = np.repeat(np.arange(len(rows)), lens)
        pos = np.arange(total) - np.repeat(np.cumsum(lens) - lens, lens) + np.repeat(starts, lens)
        c = sim.indices[pos]
        order = np.argsort(cols, kind="stable")
        sc = cols[order]
        j = np.searchsorted(sc, c)
        j[j >= len(sc)] = 0
        hit = sc[j] == c
        if hit.any():
            # a column may repeat among the targets: fill the first, then copy to the others
            out[row_of[hit], order[j[hit]]] = sim.data[pos[hit]]
            for a in range(1, len(sc)):
                if sc[a] == sc[a - 1]:
                    out[:, order[a]] = out[:, order[a - 1]]
        return out

    def _title(self, i: int) -> str:
        t = self.titles[i]
        return t if t else str(self.item_ids[i])

    def reasons(self, items: list[int], times: list[int], shifts: list[Any],
                targets: np.ndarray, cold: bool) -> list[list[Reason]]:
        if cold:
            return [[Reason("popular", "popular now")] for _ in targets]
        out: list[list[Reason]] = [[] for _ in targets]
        shift = self._recent_shift(shifts, len(items))
        probs = self.topic_probs(items, times)
        flows = self.flow_sources(items, targets) if self.uses_flows else None
        left = self.topics_left(shift, items) if shift is not None else []
        for j, y in enumerate(np.asarray(targets).tolist()):
            r = out[j]
            ty = int(self.item_topic[y]) if y < len(self.item_topic) else -1
            if shift is not None and ty >= 0 and ty in shift.topics_entered:
                r.append(Reason("shift", "you recently moved from "
                                f"{_join([self.topic_names[t] for t in left])} to "
                                f"{_join([self.topic_names[t] for t in shift.topics_entered])} "
                                f"(around {_date(shift.time)})"))
            if flows is not None and flows[j][0] > 0:
                r.append(Reason("flow", f"shoppers who bought {self._title(flows[j][0])} went on "
                                        f"to {self._title(y)}"))
            if ty >= 0 and probs[ty] >= self.topic_min_share:
                r.append(Reason("topic", f"matches your current interest in "
                                         f"{self.topic_names[ty]}"))
            if self.model_name == "topic_profile" and not any(x.kind == "topic" for x in r):
                c = self.model.contributions(np.asarray(items, np.int64),
                                             np.asarray(times, np.int64), y)
                r.append(Reason("topic", "matches your current interest in "
                                         f"{self.model.topic_names[int(np.argmax(c))]}"))
            if self.model_name == "popularity":
                r.append(Reason("popular", "popular now"))
            if not r and self.is_sequence:
                n = min(len(items), 50)
                r.append(Reason("sequence", f"follows from your last {n} item"
                                            f"{'s' if n != 1 else ''} ({self.model_name})"))
        return out

    # ------------------------------------------------------------------ answers
    def score(self, items: list[int], times: list[int]) -> np.ndarray:
        s = np.asarray(self.model.score([np.asarray(items, np.int64)],
                                        [np.asarray(times, np.int64)]), np.float32)[0]
        return s

    def recommend(self, user: str | list[str] | None = None, k: int = 10, *,
                  history: list[str] | None = None, exclude_seen: bool = True,
                  explain: bool = True) -> Recommendations:
        """Top-k for a known user id (`user` a string) or an anonymous history of dataset item
        ids (`user` a list, or `history=`). Unknown users are cold; unknown items in a history
        are ignored and listed in `ignored`."""
        if isinstance(user, list | tuple):
            history, user = list(user), None
        return self.recommend_batch([Query(user, history, k, exclude_seen, explain)])[0]

    def _prepare(self, q: Query) -> tuple[list[int], list[int], list[Any], list[str]]:
        if not 1 <= int(q.k) <= MAX_K:
            raise InputError(f"k must be in 1..{MAX_K}, got {q.k}", column="k")
        ignored: list[str] = []
        if q.user is not None:
            items, times, shifts = self.snapshot(str(q.user))
            return items, times, shifts, ignored
        items = []
        for iid in q.history or []:
            idx = self.resolve(str(iid))
            if idx is None:
                ignored.append(str(iid))
            else:
                items.append(idx)
        times = list(range(len(items)))
        shifts = self._history_shifts(items, times) if items else []
        return items, times, shifts, ignored

    def recommend_batch(self, queries: list[Query]) -> list[Recommendations]:
        """Answer many queries with one model call (what the service does with the requests
        that arrive together)."""
        prep = [self._prepare(q) for q in queries]
        warm = [j for j, p in enumerate(prep) if p[0]]
        ann = self.ann
        ranked: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        # a model's repeat gate (models.repeat) moves the history against the rest, which the
        # index's dot products do not hold: those queries that keep their history are scored in
        # full (with the history left out, the gate changes no order)
        gated = getattr(getattr(self.model, "net", None), "repeat_fit", None) is not None
        by_ann = [j for j in warm if ann is not None and (queries[j].exclude_seen or not gated)]
        on_ann = set(by_ann)
        dense = [j for j in warm if j not in on_ann]
        if by_ann:
            assert ann is not None
            hist = [np.asarray(prep[j][0], np.int64) for j in by_ann]
            qv = np.asarray(self.model.query_vectors(
                hist, [np.asarray(prep[j][1], np.int64) for j in by_ann]), np.float32)
            extra = max(len(np.unique(h)) for h in hist)  # room for the seen items
            with self._ann_lock:
                cand = ann.candidates(qv, ann.cfg.n_candidates + extra)
                rescored = [ann.rescore(qv[r], cand[r]) for r in range(len(by_ann))]
            for r, j in enumerate(by_ann):
                c, cs = rescored[r]
                ranked[j] = self._top(c, cs, prep[j][0] if queries[j].exclude_seen else [],
                                      queries[j].k)
        if dense:
            sc = np.asarray(self.model.score([np.asarray(prep[j][0], np.int64) for j in dense],
                                             [np.asarray(prep[j][1], np.int64) for j in dense]),
                            np.float32)
            for r, j in enumerate(dense):
                ranked[j] = self._top_dense(sc[r], prep[j][0] if queries[j].exclude_seen
                                            else [], queries[j].k)
        out = []
        for j, (q, (items, times, shifts, ignored)) in enumerate(zip(queries, prep, strict=True)):
            cold = not items
            top, ts = ranked[j] if not cold else self._top_popular(int(q.k))
            why = self.reasons(items, times, shifts, top, cold) if q.explain \
                else [[] for _ in top]
            recs = [RecItem(str(self.item_ids[i]), str(self.domains[i]), self.titles[i],
                            self.categories[i], self.prices[i], float(ts[r]), why[r])
                    for r, i in enumerate(top.tolist())]
            out.append(Recommendations(None if q.user is None else str(q.user), self.model_name,
                                       recs, self.shift_summary(shifts, items), cold, ignored))
        return out

    def _top_dense(self, scores: np.ndarray, seen: list[int], k: int
                   ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores) of the top-k of a full score row: padding and `seen` excluded, ties
        broken by the smaller item index."""
        s = scores.copy()
        if len(s) < self.n_items + 1:  # items added after the model: not scored by it
            s = np.concatenate([s, np.full(self.n_items + 1 - len(s), -np.inf, np.float32)])
        s[0] = -np.inf
        if seen:
            s[np.asarray(seen, np.int64)] = -np.inf
        kk = min(int(k), int(np.isfinite(s).sum()))
        if kk <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        part = np.argpartition(-s, kk - 1)[:kk]
        top = part[np.lexsort((part, -s[part]))]
        return top, s[top]

    @staticmethod
    def _top(ids: np.ndarray, scores: np.ndarray, seen: list[int], k: int
             ) -> tuple[np.ndarray, np.ndarray]:
        """The same cut over candidates (ids, exactly re-scored)."""
        keep = np.isfinite(scores)
        if seen:
            keep &= ~np.isin(ids, np.asarray(seen, np.int64))
        ids, scores = ids[keep], scores[keep]
        order = np.lexsort((ids, -scores))[:int(k)]
        return ids[order], scores[order]

    def _top_popular(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.ann is None:
            return self._top_dense(self.popularity, [], k)
        if self._pop_order is None or len(self._pop_order) < min(k, self.n_items):
            # large catalogue: rank popularity once, not per cold request
            self._pop_order = self._top_dense(self.popularity, [], MAX_K)[0]
        top = self._pop_order[:k]
        return top, self.popularity[top]

    def recommend_many(self, user_ids: list[str], k: int = 10, batch_size: int = 256,
                       progress: Any = None) -> pl.DataFrame:
        """Top-k (no reasons) of many users, batched: user_id, rank, item_id, score."""
        rows_u, rows_r, rows_i, rows_s = [], [], [], []
        if self.ann is not None:  # candidates per user, no (batch x catalogue) score matrix
            for a in range(0, len(user_ids), batch_size):
                batch = user_ids[a:a + batch_size]
                for r in self.recommend_batch([Query(u, None, k, True, False) for u in batch]):
                    for rank, it in enumerate(r.items, 1):
                        rows_u.append(str(r.user_id))
                        rows_r.append(rank)
                        rows_i.append(it.item_id)
                        rows_s.append(it.score)
                if progress is not None:
                    progress(len(batch))
        else:
            for a in range(0, len(user_ids), batch_size):
                batch = user_ids[a:a + batch_size]
                snaps = [self.snapshot(u)[:2] for u in batch]
                warm = [j for j, (h, _) in enumerate(snaps) if h]
                S = np.broadcast_to(self.popularity, (len(batch), len(self.popularity))).copy()
                if warm:
                    sc = np.asarray(self.model.score(
                        [np.asarray(snaps[j][0], np.int64) for j in warm],
                        [np.asarray(snaps[j][1], np.int64) for j in warm]), np.float32)
                    S[warm, :sc.shape[1]] = sc
                S[:, 0] = -np.inf
                for j, (h, _) in enumerate(snaps):
                    if h:
                        S[j, np.asarray(h, np.int64)] = -np.inf
                kk = min(k, S.shape[1] - 1)
                top = np.argsort(-S, axis=1, kind="stable")[:, :kk]
                for j, u in enumerate(batch):
                    for r, i in enumerate(top[j].tolist()):
                        if np.isfinite(S[j, i]):
                            rows_u.append(u)
                            rows_r.append(r + 1)
                            rows_i.append(str(self.item_ids[i]))
                            rows_s.append(float(S[j, i]))
                if progress is not None:
                    progress(len(batch))
        return pl.DataFrame({"user_id": rows_u, "rank": rows_r, "item_id": rows_i,
                             "score": rows_s},
                            schema={"user_id": pl.String, "rank": pl.Int32, "item_id": pl.String,
                                    "score": pl.Float32})

    def interests(self, user_id: str, top: int = 5) -> dict[str, Any]:
        """Current topic profile (top topics) and every detected shift of the user."""
        known = self.has_user(user_id)
        items, times, shifts = self.snapshot(user_id)
        probs = self.topic_probs(items, times)
        order = np.argsort(-probs, kind="stable")[:top]
        return {"user_id": user_id, "known": known, "n_events": len(items),
                "profile": [{"topic": self.topic_names[t], "share": round(float(probs[t]), 4)}
                            for t in order],
                "shifts": [{"at": datetime.fromtimestamp(int(e.time), UTC).isoformat(),
                            "event_index": int(e.event_index),
                            "from": [self.topic_names[t] for t in e.topics_left],
                            "to": [self.topic_names[t] for t in e.topics_entered],
                            "magnitude": round(float(e.magnitude), 4),
                            "confidence": round(float(e.confidence), 4)} for e in shifts],
                "shift": self.shift_summary(shifts, items)}

    def migrations(self, windows: int = 2) -> dict[str, Any]:
        """Platform flows: the largest migrations and the latest window pairs."""
        pairs = self.flows.get("pairs", [])[-windows:]
        return {"topics": self.flows.get("topics", []),
                "largest_migrations": self.flows.get("largest_migrations", []),
                "latest": [{k: v for k, v in p.items() if k != "matrix"} for p in pairs],
                "message": self.flows.get("message", "")}

    # ------------------------------------------------------------------ new items
    @property
    def can_add_items(self) -> bool:
        return self.model_name in ITEM_TEXT_MODELS

    def add_items(self, items: list[dict[str, Any]]) -> list[str]:
        """Add catalogue items with text; the text models (ITEM_TEXT_MODELS) embed them with
        the run's encoder at once, so they are recommendable without retraining. Returns the
        new ids (ids already in the catalogue are left as they are)."""
        if not self.can_add_items:
            raise ConfigError(new_items_refused(self.model_name))
        from shiftrec.text.item_text import TextConfig, build_texts

        with self._lock:
            new = [it for it in items if self.resolve(str(it["item_id"])) is None]
            if not new:
                return []
            if self.encoder is None:
                from shiftrec.text.encoders import load_encoder

                self.encoder = load_encoder(self.model.encoder, device="cpu")
            dom = self.domains[1] if len(self.domains) > 1 else "store"
            fr = pl.DataFrame({"title": [it.get("title") for it in new],
                               "category": [it.get("category") for it in new],
                               "brand": [it.get("brand") for it in new]},
                              schema={"title": pl.String, "category": pl.String,
                                      "brand": pl.String})
            vec = np.asarray(self.encoder.encode(build_texts(fr, TextConfig())), np.float32)
            self.model.extend_items(vec)
            keys = [f"{dom}/{it['item_id']}" for it in new]
            self.keys = np.concatenate([self.keys, np.asarray(keys, dtype=object)])
            for j, it in enumerate(new):
                self.key_index[keys[j]] = len(self.item_ids)
                self.item_ids.append(str(it["item_id"]))
                self.domains.append(dom)
                self.titles.append(it.get("title"))
                self.categories.append(it.get("category"))
                self.prices.append(it.get("price"))
            self._rebuild_id_index()
            self.item_topic = np.concatenate([self.item_topic, np.full(len(new), -1, np.int64)])
            self.popularity = np.concatenate([self.popularity, np.zeros(len(new), np.float32)])
            if self.ann is not None:  # new items are candidates at once
                first = self.ann.n
                vecs = self.model.item_vectors(np.arange(first, self.n_items + 1))
                with self._ann_lock:
                    self.ann.add(vecs)
                self.ann_info["added_items"] = self.ann_info.get("added_items", 0) + len(new)
                self._pop_order = None
            return [str(it["item_id"]) for it in new]


class _KeyMap:
    """The face of data.splits.IdMap that Topics.aligned needs, over plain keys."""

    def __init__(self, keys: np.ndarray) -> None:
        self.keys = keys

    def __len__(self) -> int:
        return len(self.keys)

    def frame(self) -> pl.DataFrame:
        parts = [str(k).split("/", 1) for k in self.keys[1:]]
        return pl.DataFrame({"domain": [p[0] for p in parts], "item_id": [p[1] for p in parts],
                             "idx": np.arange(1, len(self.keys), dtype=np.int64)},
                            schema={"domain": pl.String, "item_id": pl.String, "idx": pl.Int64})


def load_any_model(path: Path) -> Any:
    """Any registry model, or a saved topic profile (interest.profiles.TopicProfile)."""
    from shiftrec.models.registry import load_model

    if (path / "manifest.json").is_file() and \
            read_json(path / "manifest.json").get("model") == "topic_profile":
        from shiftrec.interest.profiles import TopicProfile

        return TopicProfile.load(path)
    return load_model(path)
