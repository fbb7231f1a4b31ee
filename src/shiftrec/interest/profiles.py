"""Interest profiles with exponential time decay: P(topic | user), P(item | topic) and the
interest score P(item | user) = sum_t P(item | t) P(t | user), as a Recommender (`TopicProfile`),
plus interest-level metrics (accuracy, macro precision and recall of the next item's topic).

Decay: an event of age `a` (days before the user's last event, or events before it) weighs
0.5 ** (a / half_life). P(t | u) = (decayed topic mass + alpha * prior_t) / (decayed mass + alpha),
where the prior is the global topic mix of training events.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shiftrec.config import from_dict, to_dict
from shiftrec.errors import ArtifactError, ConfigError, InputError
from shiftrec.manifest import make_manifest, write_json

DAY = 86400.0


class DecayUnit(enum.StrEnum):
    DAYS = "days"  # half-life in days of wall-clock time
    EVENTS = "events"  # half-life in number of events (for data without real timestamps)


class ItemTopicMode(enum.StrEnum):
    HARD = "hard"  # P(i|t): popularity of i among the items labelled t
    SOFT = "soft"  # P(i|t): what users interested in t consume (sum_u P(t|u) n(u,i), normalised)
    MIX = "mix"  # mix * hard + (1 - mix) * soft


@dataclass(frozen=True)
class ProfileConfig:
    half_life: float = 30.0
    decay_unit: DecayUnit = DecayUnit.DAYS
    alpha: float = 1.0  # pseudo-events of the global topic mix in every user profile
    beta: float = 1.0  # pseudo-count per item when estimating P(item | topic)
    item_topic: ItemTopicMode = ItemTopicMode.SOFT  # best on toys + Online Retail validation
    mix: float = 0.5
    min_events: int = 3  # profiles from fewer events are flagged low-confidence

    def __post_init__(self) -> None:
        if self.half_life <= 0:
            raise ConfigError(f"profile: half_life must be > 0, got {self.half_life}")
        if self.alpha < 0 or self.beta < 0:
            raise ConfigError("profile: alpha and beta must be >= 0")
        if not 0.0 <= self.mix <= 1.0:
            raise ConfigError(f"profile: mix must be in [0, 1], got {self.mix}")


def decay_weights(indptr: np.ndarray, times: np.ndarray | None, cfg: ProfileConfig,
                  ref_times: np.ndarray | None = None) -> np.ndarray:
    """Weight of each event: 0.5 ** (age / half_life); age is measured from the user's last
    event (or `ref_times[u]`), in days or in events per cfg.decay_unit."""
    lens = np.diff(indptr)
    n = int(indptr[-1])
    if cfg.decay_unit == DecayUnit.EVENTS or times is None:
        if ref_times is not None and cfg.decay_unit == DecayUnit.DAYS:
            raise InputError("time decay needs event times")
        age = (np.repeat(indptr[1:], lens) - 1 - np.arange(n)).astype(np.float64)
        return np.exp2(-age / cfg.half_life)
    t = np.asarray(times, dtype=np.float64)
    if ref_times is None:
        last = np.where(lens > 0, t[np.maximum(indptr[1:] - 1, 0)] if n else 0.0, 0.0)
    else:
        last = np.asarray(ref_times, dtype=np.float64)
    age = np.maximum(np.repeat(last, lens) - t, 0.0) / DAY
    return np.exp2(-age / cfg.half_life)


def topic_mass(indptr: np.ndarray, topics: np.ndarray, times: np.ndarray | None, n_topics: int,
               cfg: ProfileConfig, ref_times: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decayed topic mass per user (n_users, n_topics) and the number of topic-bearing events."""
    indptr = np.asarray(indptr, np.int64)
    n_users = len(indptr) - 1
    w = decay_weights(indptr, times, cfg, ref_times)
    user = np.repeat(np.arange(n_users), np.diff(indptr))
    ok = topics >= 0
    key = user[ok] * n_topics + topics[ok]
    mass = np.bincount(key, weights=w[ok], minlength=n_users * n_topics).reshape(n_users, n_topics)
    n_ev = np.bincount(user[ok], minlength=n_users)
    return mass, n_ev


def topic_distribution(mass: np.ndarray, prior: np.ndarray, alpha: float) -> np.ndarray:
    """Smoothed P(t | u) rows: (mass + alpha * prior) / (sum(mass) + alpha)."""
    tot = mass.sum(1, keepdims=True) + alpha
    out = (mass + alpha * prior[None, :]) / np.maximum(tot, 1e-300)
    empty = tot[:, 0] <= 0
    if empty.any():
        out[empty] = prior
    return out


def flatten_histories(histories: list[np.ndarray], times: list[np.ndarray] | None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    lens = np.array([len(h) for h in histories], dtype=np.int64)
    indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    items = np.concatenate(histories).astype(np.int64) if len(histories) and lens.sum() \
        else np.zeros(0, np.int64)
    t = None
    if times is not None:
        t = np.concatenate(times).astype(np.int64) if len(times) and lens.sum() else np.zeros(0, np.int64)
    return indptr, items, t


@dataclass
class UserProfile:
    """One user's interest profile, or an 'unknown user' answer (known=False)."""

    user: str
    known: bool
    n_events: int = 0
    topic_probs: np.ndarray | None = None
    low_confidence: bool = True
    message: str = ""

    def top(self, names: list[str], n: int = 3) -> list[tuple[str, float]]:
        if self.topic_probs is None:
            return []
        order = np.argsort(-self.topic_probs, kind="stable")[:n]
        return [(names[t], float(self.topic_probs[t])) for t in order]


def unknown_user(user: str) -> UserProfile:
    return UserProfile(user=user, known=False, message=f"unknown user '{user}': no events for this id")


def user_profile(user: str, topics: np.ndarray, times: np.ndarray | None, n_topics: int,
                 prior: np.ndarray | None = None, cfg: ProfileConfig = ProfileConfig()) -> UserProfile:
    """Profile of one user from their topic sequence (time order); -1 topics are ignored."""
    prior = np.full(n_topics, 1.0 / n_topics) if prior is None else prior
    mass, n_ev = topic_mass(np.array([0, len(topics)]), np.asarray(topics, np.int64),
                            None if times is None else np.asarray(times), n_topics, cfg)
    p = topic_distribution(mass, prior, cfg.alpha)[0]
    low = int(n_ev[0]) < cfg.min_events
    msg = (f"low confidence: only {int(n_ev[0])} event(s) with a known topic (< {cfg.min_events})"
           if low else "")
    return UserProfile(user, True, int(n_ev[0]), p, low, msg)


class TopicProfile:
    """Recommender: score(i | history) = sum_t P(i | t) P(t | history), decayed profiles."""

    name = "topic_profile"

    def __init__(self, item_topic: np.ndarray, topic_names: list[str],
                 cfg: ProfileConfig = ProfileConfig()) -> None:
        self.item_topic = np.asarray(item_topic, dtype=np.int64)  # (n_items + 1,), -1 = none
        self.topic_names = list(topic_names)
        self.cfg = cfg
        self.p_item_topic: np.ndarray | None = None  # (T, n_items + 1)
        self.prior: np.ndarray | None = None  # (T,)
        if len(self.item_topic) and self.item_topic.max(initial=-1) >= len(self.topic_names):
            raise InputError("item topic ids exceed the number of topic names")

    @property
    def n_topics(self) -> int:
        return len(self.topic_names)

    @property
    def n_items(self) -> int:
        return len(self.item_topic) - 1

    def check_fitted(self) -> None:
        if self.p_item_topic is None or self.prior is None:
            raise ArtifactError("topic profile model is not fitted")

    def fit(self, split: Any) -> TopicProfile:
        if split.n_items + 1 != len(self.item_topic):
            raise InputError(f"item topics cover {self.n_items} items but the split has {split.n_items}")
        T, n1 = self.n_topics, len(self.item_topic)
        tr = split.train
        tt = self.item_topic[tr.items]
        ok = tt >= 0
        prior = np.bincount(tt[ok], minlength=T).astype(np.float64) + 1.0
        self.prior = prior / prior.sum()
        counts = np.bincount(tr.items, minlength=n1).astype(np.float64)
        counts[0] = 0
        hard = np.zeros((T, n1))
        lab = np.flatnonzero(self.item_topic >= 0)
        hard[self.item_topic[lab], lab] = counts[lab] + self.cfg.beta
        hard /= np.maximum(hard.sum(1, keepdims=True), 1e-300)
        if self.cfg.item_topic == ItemTopicMode.HARD:
            self.p_item_topic = hard
            return self
        import scipy.sparse as sp

        times = tr.times if self.cfg.decay_unit == DecayUnit.DAYS else None
        mass, _ = topic_mass(tr.indptr, self.item_topic[tr.items], times, T, self.cfg)
        p_tu = topic_distribution(mass, self.prior, self.cfg.alpha)  # (U, T)
        users = np.repeat(np.arange(len(tr)), tr.lengths())
        c = sp.csr_matrix((np.ones(len(users)), (users, tr.items)), shape=(len(tr), n1))
        soft = np.asarray((c.T @ p_tu).T)  # (T, n1)
        soft[:, 0] = 0
        soft += self.cfg.beta / max(n1 - 1, 1) * (np.arange(n1) > 0)[None, :]
        soft /= np.maximum(soft.sum(1, keepdims=True), 1e-300)
        self.p_item_topic = soft if self.cfg.item_topic == ItemTopicMode.SOFT \
            else self.cfg.mix * hard + (1 - self.cfg.mix) * soft
        return self

    def topic_probs(self, histories: list[np.ndarray], times: list[np.ndarray] | None = None) -> np.ndarray:
        """P(t | history) for each history, (batch, n_topics)."""
        self.check_fitted()
        assert self.prior is not None
        indptr, items, t = flatten_histories(histories, times)
        # without times, decay_weights falls back to event order with the same half-life
        if len(items) and (items.max() >= len(self.item_topic) or items.min() < 0):
            raise InputError(f"history item index out of range 0..{self.n_items}")
        mass, _ = topic_mass(indptr, self.item_topic[items], t, self.n_topics, self.cfg)
        return topic_distribution(mass, self.prior, self.cfg.alpha)

    def score(self, histories: list[np.ndarray], times: list[np.ndarray] | None = None) -> np.ndarray:
        self.check_fitted()
        assert self.p_item_topic is not None
        s = (self.topic_probs(histories, times) @ self.p_item_topic).astype(np.float32)
        s[:, 0] = -np.inf
        return s

    def contributions(self, history: np.ndarray, times: np.ndarray | None, item: int) -> np.ndarray:
        """Per-topic terms P(item | t) P(t | user) of one item's score, (n_topics,)."""
        self.check_fitted()
        assert self.p_item_topic is not None
        p = self.topic_probs([np.asarray(history)], None if times is None else [np.asarray(times)])[0]
        return p * self.p_item_topic[:, int(item)]

    def save(self, path: str | Path) -> None:
        self.check_fitted()
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(p / "model.npz", item_topic=self.item_topic,
                            p_item_topic=self.p_item_topic, prior=self.prior)
        write_json(p / "manifest.json", make_manifest(
            "model", model=self.name, n_items=self.n_items, n_topics=self.n_topics,
            topic_names=self.topic_names, config=to_dict(self.cfg)))

    @classmethod
    def load(cls, path: str | Path) -> TopicProfile:
        from shiftrec.manifest import read_model_manifest

        p, man = read_model_manifest(path, cls.name)
        z = np.load(p / "model.npz", allow_pickle=False)
        m = cls(z["item_topic"], man["topic_names"], from_dict(ProfileConfig, man.get("config", {})))
        m.p_item_topic, m.prior = z["p_item_topic"], z["prior"]
        if m.p_item_topic.shape != (m.n_topics, m.n_items + 1):
            raise ArtifactError(f"p_item_topic has shape {m.p_item_topic.shape}, expected "
                                f"({m.n_topics}, {m.n_items + 1})", path=p / "model.npz")
        return m


# ---------------------------------------------------------------- interest-level metrics

def next_topic_metrics(pred: np.ndarray, true: np.ndarray, n_topics: int) -> dict[str, float]:
    """Accuracy and macro precision / recall over the topics that occur in truth or predictions."""
    pred, true = np.asarray(pred, np.int64), np.asarray(true, np.int64)
    if len(true) == 0:
        return {"accuracy": float("nan"), "macro_precision": float("nan"),
                "macro_recall": float("nan"), "n": 0}
    tp = np.bincount(true[pred == true], minlength=n_topics).astype(float)
    n_pred = np.bincount(pred, minlength=n_topics).astype(float)
    n_true = np.bincount(true, minlength=n_topics).astype(float)
    present = (n_pred > 0) | (n_true > 0)
    prec = np.where(n_pred > 0, tp / np.maximum(n_pred, 1), 0.0)[present]
    rec = np.where(n_true > 0, tp / np.maximum(n_true, 1), 0.0)[present]
    return {"accuracy": float((pred == true).mean()), "macro_precision": float(prec.mean()),
            "macro_recall": float(rec.mean()), "n": int(len(true))}


def evaluate_next_topic(model: TopicProfile, evalset: Any, batch_size: int = 4096) -> dict[str, Any]:
    """Predict the topic of each eval user's target as argmax P(t | history); baselines: the
    topic of the last history item, and the globally most common topic."""
    model.check_fitted()
    assert model.prior is not None
    true = model.item_topic[evalset.target]
    keep = np.flatnonzero(true >= 0)
    probs = []
    for a in range(0, len(keep), batch_size):
        rows = keep[a:a + batch_size]
        probs.append(model.topic_probs([evalset.history[i] for i in rows],
                                       [evalset.history.times_of(i) for i in rows]))
    pred = np.concatenate(probs).argmax(1) if probs else np.zeros(0, np.int64)
    h = evalset.history
    last_items = h.items[np.maximum(h.indptr[1:] - 1, 0)][keep]
    last = model.item_topic[last_items]
    last = np.where(last >= 0, last, int(model.prior.argmax()))
    T = model.n_topics
    return {"topic_profile": next_topic_metrics(pred, true[keep], T),
            "last_item_topic": next_topic_metrics(last, true[keep], T),
            "global_majority": next_topic_metrics(np.full(len(keep), int(model.prior.argmax())),
                                                  true[keep], T),
            "n_topics": T, "skipped_no_topic": int(len(true) - len(keep))}


def profile_of(ev: Any, user: str, cfg: ProfileConfig = ProfileConfig(),
               prior: np.ndarray | None = None) -> UserProfile:
    """One user's profile from InterestEvents; an unknown id gives a known=False answer."""
    hit = np.flatnonzero(ev.user_ids == user) if len(ev) else np.zeros(0, np.int64)
    if len(hit) == 0:
        return unknown_user(user)
    topics, times, _ = ev.of(int(hit[0]))
    return user_profile(user, topics, times if cfg.decay_unit == DecayUnit.DAYS else None,
                        ev.n_topics, prior, cfg)
