"""Per-user interest-shift detection: a long-term (slow-decay, lagged) topic profile against the
recent events, with a multi-topic CUSUM likelihood-ratio test (default) or a Jensen-Shannon
divergence threshold between a fast-decay and the slow-decay profile.

CUSUM: for every topic j, the hypothesis H_j "the user now spends a share `rho` of events on
j, and the rest like before except that the old dominant topic d keeps only `dominant_keep` of
its share" against the long-term profile p (H_j: q_j = rho, q_k = (1 - rho) p'_k / (Z - p'_j)
with p' = p except p'_d = dominant_keep * p_d, Z = sum p'). Each event k adds log(q_k / p_k) to
S_j, S = max(0, S + llr); a shift fires when max_j S_j > threshold. With dominant_keep = 1 this
is the plain test: log(rho / p_k) for j = k, log((1 - rho) / (1 - p_j)) otherwise. The
long-term profile excludes the last `lag` events, so a run of new events is judged against
the interest before it. No shift can fire before `min_history` events
(users with fewer events get a low-confidence profile and never a shift) nor within
`refractory` events after the previous one.

One state update is O(n_topics). Three entry points:
- `ShiftDetector.detect(events)`: whole datasets, all users in lockstep by event position, and
- `ShiftDetector.update_many(table, rows, topics, times)`: a micro-batch of a live stream,
  both run the one vectorised step function `_step`;
- `ShiftDetector.update(state, topic, t)`: one user, one event, is a separate scalar
  pure-Python transcription of `_step` (the same operations in the same order; numpy per event
  would be several times slower). It is therefore a second copy of the arithmetic, kept equal by
  `tests/interest/test_shifts.py::test_streaming_batch_and_microbatch_agree`, which checks that
  all three give identical states and detections; change both or neither.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from shiftrec.errors import ConfigError, InputError
from shiftrec.interest.events import InterestEvents
from shiftrec.interest.profiles import DAY, DecayUnit

Progress = Callable[[int, int], None]


class ShiftMethod(enum.StrEnum):
    CUSUM = "cusum"
    JSD = "jsd"


@dataclass(frozen=True)
class ShiftConfig:
    method: ShiftMethod = ShiftMethod.CUSUM
    decay_unit: DecayUnit = DecayUnit.EVENTS
    slow_half_life: float = 20.0  # long-term profile (events or days)
    fast_half_life: float = 2.0  # recent profile (events or days)
    lag: int = 3  # the long-term profile leaves out the last `lag` events
    rho: float = 0.7  # CUSUM: share of the new topic under the shift hypothesis
    alpha: float = 2.0  # pseudo-events (uniform) smoothing the long-term profile
    threshold: float = 8.0  # CUSUM: nats; JSD: bits in [0, 1]
    min_history: int = 10  # no shift before this many events
    refractory: int = 10  # events after a shift before the next can fire
    dominant_keep: float = 0.1  # CUSUM: share of the old dominant topic's probability kept under
    # the shift hypothesis (1 = the other topics keep their long-term mix; < 1 = a shift also
    # means leaving the dominant topic, so its events count against a shift)
    reset_keep: float = 0.5  # after a shift the long-term profile keeps this share of its mix
    share_min: float = 0.15  # a topic counts as left / entered when its share moves this much
    chunk_users: int = 65536  # batch path: users per lockstep block (cache-sized)
    stream_threads: int = 2  # update_many: users are independent, so a micro-batch's users are
    # split across this many threads (numpy releases the GIL); results do not depend on it

    def __post_init__(self) -> None:
        if not 0.0 < self.rho < 1.0:
            raise ConfigError(f"shifts: rho must be in (0, 1), got {self.rho}")
        if self.slow_half_life <= 0 or self.fast_half_life <= 0:
            raise ConfigError("shifts: half-lives must be > 0")
        if self.lag < 0 or self.min_history < 1 or self.refractory < 0:
            raise ConfigError("shifts: lag >= 0, min_history >= 1 and refractory >= 0 are required")
        if self.min_history <= self.lag:
            raise ConfigError(f"shifts: min_history ({self.min_history}) must exceed lag ({self.lag})")
        if not 0.0 < self.dominant_keep <= 1.0:
            raise ConfigError(f"shifts: dominant_keep must be in (0, 1], got {self.dominant_keep}")
        if not 0.0 <= self.reset_keep <= 1.0:
            raise ConfigError(f"shifts: reset_keep must be in [0, 1], got {self.reset_keep}")
        if self.stream_threads < 1:
            raise ConfigError(f"shifts: stream_threads must be >= 1, got {self.stream_threads}")


@dataclass(frozen=True)
class ShiftEvent:
    """One detected shift. `event_index` is the index (in the user's event sequence) of the
    event at which the detector fired; `time` its unix-second timestamp."""

    user: str
    event_index: int
    time: int
    topics_left: tuple[int, ...]
    topics_entered: tuple[int, ...]
    magnitude: float  # Jensen-Shannon divergence (bits) between recent and long-term profiles
    confidence: float  # in (0, 1]
    statistic: float  # CUSUM statistic (nats) or JSD at firing

    def describe(self, names: list[str]) -> str:
        left = ", ".join(names[t] for t in self.topics_left) or "no single topic"
        ent = ", ".join(names[t] for t in self.topics_entered)
        return (f"event {self.event_index}: moved from {left} to {ent} "
                f"(magnitude {self.magnitude:.2f}, confidence {self.confidence:.2f})")


@dataclass
class ShiftState:
    """One user's detector state: per-topic lists (long-term mass, recent mass, CUSUM
    statistics) and a ring of the last `lag` events. Plain Python floats: the per-event path
    is faster with them than with tiny numpy arrays."""

    base: list[float]
    fast: list[float]
    cusum: list[float]
    ring_topic: list[int]
    ring_time: list[float]
    n: int = 0
    last_t: float = 0.0
    cooldown: int = 0
    n_shifts: int = 0


@dataclass
class StateTable:
    """Detector states for many users (row per user), for micro-batch streaming."""

    state: np.ndarray  # (U, 3, T): long-term mass, recent mass, CUSUM statistics
    ring_topic: np.ndarray  # (U, lag)
    ring_time: np.ndarray
    n: np.ndarray  # (U,)
    last_t: np.ndarray
    cooldown: np.ndarray
    user_ids: list[str] = field(default_factory=list)
    _buf: np.ndarray | None = field(default=None, repr=False)

    def work(self, m: int) -> np.ndarray:
        """A reusable (m, 3, T) buffer (avoids fresh, page-faulting allocations per batch)."""
        if self._buf is None or len(self._buf) < m:
            self._buf = np.empty((max(m, 1024), *self.state.shape[1:]))
        return self._buf[:m]


@dataclass
class ShiftEvents:
    """Columnar shift events of a batch run (user = row in InterestEvents)."""

    user: np.ndarray
    event_index: np.ndarray
    time: np.ndarray
    topic_entered: np.ndarray  # main topic entered
    entered: np.ndarray  # (n, T) bool
    left: np.ndarray  # (n, T) bool
    magnitude: np.ndarray
    confidence: np.ndarray
    statistic: np.ndarray

    def __len__(self) -> int:
        return len(self.user)

    @classmethod
    def empty(cls, n_topics: int) -> ShiftEvents:
        z = np.zeros(0, np.int64)
        b = np.zeros((0, n_topics), bool)
        f = np.zeros(0)
        return cls(z, z, z, z, b, b, f, f, f)

    @classmethod
    def concat(cls, parts: list[ShiftEvents], n_topics: int) -> ShiftEvents:
        if not parts:
            return cls.empty(n_topics)
        out = cls(*[np.concatenate([getattr(p, f) for p in parts]) for f in
                    ("user", "event_index", "time", "topic_entered", "entered", "left",
                     "magnitude", "confidence", "statistic")])
        o = np.lexsort((out.event_index, out.user))
        return cls(*[getattr(out, f)[o] for f in ("user", "event_index", "time", "topic_entered",
                                                  "entered", "left", "magnitude", "confidence",
                                                  "statistic")])

    def to_frame(self, user_ids: np.ndarray, names: list[str]) -> pl.DataFrame:
        nm = np.asarray(names, dtype=object)

        def lists(mask: np.ndarray) -> list[list[str]]:
            return [list(nm[row]) for row in mask]

        return pl.DataFrame({
            "user_id": pl.Series([str(u) for u in np.asarray(user_ids, dtype=object)[self.user]],
                                 dtype=pl.String),
            "event_index": self.event_index.astype(np.int64),
            "time": pl.Series(self.time.astype(np.int64) * 1_000_000, dtype=pl.Int64)
            .cast(pl.Datetime("us", "UTC")),
            "topic_entered": pl.Series(list(nm[self.topic_entered]) if len(self) else [], dtype=pl.String),
            "topics_entered": pl.Series(lists(self.entered), dtype=pl.List(pl.String)),
            "topics_left": pl.Series(lists(self.left), dtype=pl.List(pl.String)),
            "magnitude": self.magnitude.astype(np.float64),
            "confidence": self.confidence.astype(np.float64),
            "statistic": self.statistic.astype(np.float64),
        })


def jsd_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence (bits) between matching rows of two distributions."""
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(p > 0, p * np.log2(p / m), 0.0).sum(-1)
        b = np.where(q > 0, q * np.log2(q / m), 0.0).sum(-1)
    return np.clip(0.5 * (a + b), 0.0, 1.0)


def _jsd(p: list[float], q: list[float]) -> float:
    """Jensen-Shannon divergence (bits) of two distributions given as lists."""
    a = b = 0.0
    for x, y in zip(p, q, strict=False):
        m = 0.5 * (x + y)
        if x > 0:
            a += x * math.log2(x / m)
        if y > 0:
            b += y * math.log2(y / m)
    return min(max(0.5 * (a + b), 0.0), 1.0)


class ShiftDetector:
    """Detects interest shifts in topic sequences (see the module docstring)."""

    min_thread_users = 16384  # update_many splits a micro-batch across threads from this size

    def __init__(self, n_topics: int, cfg: ShiftConfig = ShiftConfig()) -> None:
        if n_topics < 2:
            raise ConfigError(f"shift detection needs at least 2 topics, got {n_topics}")
        self.T = int(n_topics)
        self.cfg = cfg
        c = cfg
        self._a0 = c.alpha / self.T
        self._log_rho = math.log(c.rho)
        self._log_1m_rho = math.log(1.0 - c.rho)
        self._log_keep = math.log(c.dominant_keep)
        if c.decay_unit == DecayUnit.EVENTS:
            self._gb = 0.5 ** (1.0 / c.slow_half_life)
            self._gf = 0.5 ** (1.0 / c.fast_half_life)
            self._evict_w = self._gb ** c.lag
        self._hb = c.slow_half_life * DAY
        self._hf = c.fast_half_life * DAY

    # ------------------------------------------------------------ the shared step
    def _step(self, base: np.ndarray, fast: np.ndarray, cusum: np.ndarray, cooldown: np.ndarray,
              n: np.ndarray | int, last_t: np.ndarray, k: np.ndarray, t: np.ndarray,
              ev_k: np.ndarray | None, ev_t: np.ndarray | None,
              ) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
        """Advance `a` rows by one event each (in place). ev_k/ev_t: the event leaving the
        recent window into the long-term profile (None, or -1 in rows, when none does).
        Returns (fired rows mask, details of the fired rows)."""
        c = self.cfg
        a = len(k)
        r = np.arange(a)
        # 1. decay
        if c.decay_unit == DecayUnit.EVENTS:
            base *= self._gb
            fast *= self._gf
        else:
            dt = np.where(np.asarray(n) > 0, np.maximum(t - last_t, 0), 0).astype(np.float64)
            base *= np.exp2(-dt / self._hb)[:, None]
            fast *= np.exp2(-dt / self._hf)[:, None]
        # 2. test statistic against the lagged long-term profile, on the rows being checked
        # (the others are in warm-up or refractory and keep a zero statistic)
        check = np.broadcast_to((np.asarray(n) >= c.min_history) & (cooldown == 0), (a,))
        n_check = int(np.count_nonzero(check))
        full = n_check == a
        ci = r if full else np.flatnonzero(check)
        p = S = None
        if n_check:
            B = base if full else base[ci]
            kc = k if full else k[ci]
            rc = r if full else np.arange(n_check)
            p = B + self._a0
            p /= B.sum(1, keepdims=True) + c.alpha
            if c.method == ShiftMethod.CUSUM:
                if c.dominant_keep < 1.0:
                    dom = p.argmax(1)
                    pdom = p[rc, dom]
                    # H1(j): q_j = rho; the others share 1 - rho like p, the dominant shrunk
                    z = (1.0 - (1.0 - c.dominant_keep) * pdom)[:, None] - p
                    z[rc, dom] = 1.0 - pdom
                    llr = np.log(z, out=z)
                    np.subtract(self._log_1m_rho, llr, out=llr)
                    llr[np.flatnonzero(kc == dom)] += self._log_keep
                else:
                    llr = self._log_1m_rho - np.log1p(-p)
                llr[rc, kc] = self._log_rho - np.log(p[rc, kc])
                S = cusum if full else cusum[ci]
                S += llr
                np.maximum(S, 0.0, out=S)
                if not full:
                    cusum[ci] = S
        # 3. recent profile takes the event
        fast[r, k] += 1.0
        # 4. the event leaving the recent window joins the long-term profile
        if c.lag == 0:
            base[r, k] += 1.0
        elif ev_k is not None and ev_t is not None:
            rr, kk, tt, te = r, ev_k, t, ev_t
            if kk.min(initial=0) < 0:  # rows whose recent window is not full yet (-1)
                sel = kk >= 0
                rr, kk, tt, te = r[sel], kk[sel], t[sel], te[sel]
            if c.decay_unit == DecayUnit.EVENTS:
                base[rr, kk] += self._evict_w
            else:
                base[rr, kk] += np.exp2(-np.maximum(tt - te, 0) / self._hb)
        # 5. fire?
        np.subtract(cooldown, 1, out=cooldown, where=cooldown > 0)
        if not n_check:
            return np.zeros(a, bool), None
        assert p is not None
        if c.method == ShiftMethod.CUSUM:
            assert S is not None
            stat = S.max(1)
        else:
            F = fast if full else fast[ci]
            stat = jsd_rows(F / F.sum(1, keepdims=True), p)
        fsub = np.flatnonzero(stat > c.threshold)
        if not len(fsub):
            return np.zeros(a, bool), None
        f = ci[fsub]
        pb = p[fsub]
        fq = fast[f] / fast[f].sum(1, keepdims=True)
        main = cusum[f].argmax(1) if c.method == ShiftMethod.CUSUM else (fq - pb).argmax(1)
        entered = (fq - pb) >= c.share_min
        entered[np.arange(len(f)), main] = True
        left = (pb >= c.share_min) & (fq <= 0.5 * pb) & ~entered
        mag = jsd_rows(fq, pb)
        nf = np.broadcast_to(np.asarray(n), (a,))[f]
        st = stat[fsub]
        conf = (1.0 - np.exp2(-st / c.threshold)) * np.minimum(1.0, (nf + 1) / (2.0 * c.min_history))
        # reset: the long-term profile moves towards the recent one; the statistic restarts
        bm = base[f].sum(1, keepdims=True)
        base[f] = c.reset_keep * base[f] + (1 - c.reset_keep) * bm * fq
        cusum[f] = 0.0
        cooldown[f] = c.refractory
        fire = np.zeros(a, bool)
        fire[f] = True
        return fire, {"rows": f, "main": main, "entered": entered, "left": left, "magnitude": mag,
                      "confidence": conf, "statistic": st}

    # ------------------------------------------------------------ streaming, one event
    def init_state(self) -> ShiftState:
        T, L = self.T, self.cfg.lag
        return ShiftState([0.0] * T, [0.0] * T, [0.0] * T, [-1] * L, [0.0] * L)

    def is_low_confidence(self, n_events: int) -> bool:
        return n_events < self.cfg.min_history

    def update(self, state: ShiftState, topic_id: int, timestamp: float, user: str = ""
               ) -> tuple[ShiftState, ShiftEvent | None]:
        """Advance one user's state by one event (time order); returns (state, event or None).

        O(n_topics) pure-Python arithmetic, the same operations in the same order as the
        vectorised `_step`, so streaming and batch runs agree."""
        c = self.cfg
        T = self.T
        k = int(topic_id)
        if not 0 <= k < T:
            raise InputError(f"topic id {topic_id} out of range 0..{T - 1}")
        t = float(timestamp)
        n = state.n
        log = math.log
        # 1. decay
        if c.decay_unit == DecayUnit.EVENTS:
            gb, gf = self._gb, self._gf
        else:
            dt = max(t - state.last_t, 0.0) if n > 0 else 0.0
            gb, gf = 2.0 ** (-dt / self._hb), 2.0 ** (-dt / self._hf)
        base = [b * gb for b in state.base]
        fast = [f * gf for f in state.fast]
        # 2. statistic against the lagged long-term profile
        check = n >= c.min_history and state.cooldown == 0
        tot = sum(base) + c.alpha
        a0 = self._a0
        p = [(b + a0) / tot for b in base]
        if c.method == ShiftMethod.CUSUM and check:
            l1 = self._log_1m_rho
            if c.dominant_keep < 1.0:
                pdom = max(p)
                dom = p.index(pdom)
                zc = 1.0 - (1.0 - c.dominant_keep) * pdom
                z = [zc - q for q in p]
                z[dom] = 1.0 - pdom
                llr = [l1 - log(v) for v in z]
                if k == dom:
                    lk = self._log_keep
                    llr = [v + lk for v in llr]
            else:
                llr = [l1 - math.log1p(-q) for q in p]
            llr[k] = self._log_rho - log(p[k])
            cusum = [x if (x := s_ + v) > 0.0 else 0.0 for s_, v in zip(state.cusum, llr, strict=False)]
        else:
            cusum = [0.0] * T
        # 3. recent profile
        fast[k] += 1.0
        # 4. the event leaving the recent window joins the long-term profile
        L = c.lag
        if L == 0:
            base[k] += 1.0
        else:
            slot = n % L
            if n >= L:
                kk = state.ring_topic[slot]
                if c.decay_unit == DecayUnit.EVENTS:
                    base[kk] += self._evict_w
                else:
                    base[kk] += 2.0 ** (-max(t - state.ring_time[slot], 0.0) / self._hb)
            state.ring_topic[slot], state.ring_time[slot] = k, t
        # 5. fire?
        if c.method == ShiftMethod.CUSUM:
            stat = max(cusum)
        else:
            fs = sum(fast)
            stat = _jsd([f / fs for f in fast], p)
        cooldown = state.cooldown - 1 if state.cooldown > 0 else 0
        ev = None
        if check and stat > c.threshold:
            fs = sum(fast)
            fq = [f / fs for f in fast]
            diff = [a - b for a, b in zip(fq, p, strict=False)]
            main = (cusum.index(max(cusum)) if c.method == ShiftMethod.CUSUM
                    else diff.index(max(diff)))
            entered = [d >= c.share_min for d in diff]
            entered[main] = True
            left = [p[i] >= c.share_min and fq[i] <= 0.5 * p[i] and not entered[i] for i in range(T)]
            conf = (1.0 - 2.0 ** (-stat / c.threshold)) * min(1.0, (n + 1) / (2.0 * c.min_history))
            ev = ShiftEvent(user, n, int(timestamp), tuple(i for i in range(T) if left[i]),
                            tuple(i for i in range(T) if entered[i]), _jsd(fq, p), conf, stat)
            bm = sum(base)
            keep = c.reset_keep
            base = [keep * b + (1 - keep) * bm * q for b, q in zip(base, fq, strict=False)]
            cusum = [0.0] * T
            cooldown = c.refractory
            state.n_shifts += 1
        state.base, state.fast, state.cusum = base, fast, cusum
        state.cooldown = cooldown
        state.last_t = t
        state.n = n + 1
        return state, ev

    # ------------------------------------------------------------ streaming, micro-batches
    def init_table(self, n_users: int = 0) -> StateTable:
        T, L = self.T, self.cfg.lag
        return StateTable(np.zeros((n_users, 3, T)), np.full((n_users, L), -1, np.int64), np.zeros((n_users, L)),
                          np.zeros(n_users, np.int64), np.zeros(n_users), np.zeros(n_users, np.int64))

    def update_many(self, table: StateTable, rows: np.ndarray, topics: np.ndarray, times: np.ndarray
                    ) -> ShiftEvents:
        """Apply a micro-batch of events (arrival order; each user's events in time order).
        `rows` index the table. Same results as calling `update` event by event."""
        rows = np.asarray(rows, np.int64)
        topics = np.asarray(topics, np.int64)
        times = np.asarray(times, np.float64)
        if len(topics) and (topics.min() < 0 or topics.max() >= self.T):
            raise InputError(f"topic ids out of range 0..{self.T - 1}")
        if len(rows) == 0:
            return ShiftEvents.empty(self.T)
        # group the batch by user (keeping each user's order), users with most events first:
        # then step p touches a prefix of the users, and each user's state is gathered once
        by_user = np.argsort(rows, kind="stable")
        sr = rows[by_user]
        first = np.ones(len(sr), bool)
        first[1:] = sr[1:] != sr[:-1]
        starts = np.flatnonzero(first)
        counts = np.diff(np.concatenate([starts, [len(sr)]]))
        uo = np.argsort(-counts, kind="stable")
        starts, counts = starts[uo], counts[uo]
        u = sr[starts]
        buf = table.work(len(u))  # (m, 3, T): long-term, recent, CUSUM (reused buffer)
        k = self.cfg.stream_threads if len(u) >= self.min_thread_users else 1
        if k == 1:
            parts = self._advance(table, u, starts, counts, by_user, topics, times, buf)
        else:
            # interleaved shares keep each share sorted by event count (a prefix stays active);
            # each share gets its own slice of the buffer and its own table rows
            from concurrent.futures import ThreadPoolExecutor

            sizes = [len(range(j, len(u), k)) for j in range(k)]
            offs = np.concatenate([[0], np.cumsum(sizes)])
            with ThreadPoolExecutor(k) as ex:
                futs = [ex.submit(self._advance, table, u[j::k], starts[j::k], counts[j::k], by_user,
                                  topics, times, buf[offs[j]:offs[j + 1]]) for j in range(k)]
                parts = [x for f in futs for x in f.result()]
        return ShiftEvents.concat(parts, self.T)

    def _advance(self, table: StateTable, u: np.ndarray, starts: np.ndarray, counts: np.ndarray,
                 by_user: np.ndarray, topics: np.ndarray, times: np.ndarray, g: np.ndarray
                 ) -> list[ShiftEvents]:
        """Run the batch events of users `u` (sorted by event count, descending) through their
        states; `g` is an (len(u), 3, T) work buffer. Returns the shift events."""
        np.take(table.state, u, axis=0, out=g)
        cd, n0, last = table.cooldown[u], table.n[u].copy(), table.last_t[u]
        L = self.cfg.lag
        ring_k = table.ring_topic[u] if L else None
        ring_t = table.ring_time[u] if L else None
        act = np.searchsorted(-counts, -np.arange(int(counts[0])), side="left")
        parts = []
        for p in range(int(counts[0])):
            a = int(act[p])
            ev = by_user[starts[:a] + p]  # the p-th batch event of each of the first a users
            k, t = topics[ev], times[ev]
            n = n0[:a] + p
            ev_k = ev_t = None
            if L:
                assert ring_k is not None and ring_t is not None
                slot = n % L
                ra = np.arange(a)
                ev_k = np.where(n >= L, ring_k[ra, slot], -1)
                ev_t = ring_t[ra, slot]
            fire, det = self._step(g[:a, 0], g[:a, 1], g[:a, 2], cd[:a], n, last[:a], k, t, ev_k, ev_t)
            if L:
                ring_k[ra, slot] = k
                ring_t[ra, slot] = t
            last[:a] = t
            if det is not None:
                f = det["rows"]
                parts.append(ShiftEvents(u[f], n[f], t[f].astype(np.int64), det["main"], det["entered"],
                                         det["left"], det["magnitude"], det["confidence"],
                                         det["statistic"]))
        table.state[u] = g
        table.cooldown[u] = cd
        table.n[u] = n0 + counts
        table.last_t[u] = last
        if L:
            table.ring_topic[u] = ring_k
            table.ring_time[u] = ring_t
        return parts

    # ------------------------------------------------------------ batch: whole datasets
    def detect(self, ev: InterestEvents, progress: Progress | None = None) -> ShiftEvents:
        """All users of `ev`, processed in lockstep by event position (blocks of users sorted
        by length so the active users at each position are a prefix)."""
        if ev.n_topics != self.T:
            raise InputError(f"events use {ev.n_topics} topics but the detector has {self.T}")
        return self.detect_arrays(ev.indptr, ev.topic, ev.time, ev.pos, progress)

    def detect_arrays(self, indptr: np.ndarray, topics: np.ndarray, times: np.ndarray,
                      pos: np.ndarray | None = None, progress: Progress | None = None) -> ShiftEvents:
        c = self.cfg
        indptr = np.asarray(indptr, np.int64)
        topics = np.asarray(topics, np.int64)
        times_f = np.asarray(times, np.float64)
        if len(topics) and (topics.min() < 0 or topics.max() >= self.T):
            raise InputError(f"topic ids out of range 0..{self.T - 1}")
        U = len(indptr) - 1
        lens = np.diff(indptr)
        order = np.argsort(-lens, kind="stable")
        parts: list[ShiftEvents] = []
        T, L = self.T, c.lag
        done = 0
        for c0 in range(0, U, c.chunk_users):
            users = order[c0:c0 + c.chunk_users]
            ln = lens[users]
            starts = indptr[users]
            m = len(users)
            maxlen = int(ln[0]) if m else 0
            # active rows at position p: those with length > p (a prefix: lengths descending)
            act = np.searchsorted(-ln, -np.arange(maxlen), side="left")
            base = np.zeros((m, T))
            fast = np.zeros((m, T))
            cusum = np.zeros((m, T))
            cd = np.zeros(m, np.int64)
            last = np.zeros(m)
            for p in range(maxlen):
                a = int(act[p])
                if a == 0:
                    break
                idx = starts[:a] + p
                k = topics[idx]
                t = times_f[idx]
                ev_k = ev_t = None
                if L and p >= L:
                    ev_k = topics[idx - L]
                    ev_t = times_f[idx - L]
                fire, det = self._step(base[:a], fast[:a], cusum[:a], cd[:a], p, last[:a], k, t,
                                       ev_k, ev_t)
                last[:a] = t
                if det is not None:
                    f = det["rows"]
                    ei = p if pos is None else pos[idx[f]]
                    parts.append(ShiftEvents(users[f], np.broadcast_to(np.asarray(ei), (len(f),)).astype(np.int64),
                                             times[idx[f]].astype(np.int64), det["main"],
                                             det["entered"], det["left"], det["magnitude"],
                                             det["confidence"], det["statistic"]))
            done += m
            if progress is not None:
                progress(done, U)
        return ShiftEvents.concat(parts, T)


# ---------------------------------------------------------------- evaluation against truth

def evaluate_detection(det_user: np.ndarray, det_index: np.ndarray, truth_user: np.ndarray,
                       truth_index: np.ndarray, stable_users: np.ndarray, tolerance: int = 10
                       ) -> dict[str, Any]:
    """Match detections to planted shifts. A detection at event d matches a true shift at
    event s of the same user when s <= d <= s + tolerance (the first such detection counts;
    every other detection is a false positive). Also: median / mean delay d - s of the
    matched ones, and the share of stable users with any detection (false-alarm rate)."""
    det = pl.DataFrame({"u": np.asarray(det_user, np.int64), "d": np.asarray(det_index, np.int64)})
    tru = pl.DataFrame({"u": np.asarray(truth_user, np.int64), "s": np.asarray(truth_index, np.int64)})
    j = det.with_row_index("di").join(tru.with_row_index("ti"), on="u", how="inner")
    j = j.filter((pl.col("d") >= pl.col("s")) & (pl.col("d") <= pl.col("s") + tolerance))
    first = j.sort("d").group_by("ti", maintain_order=True).first()
    first = first.unique("di", keep="first")  # one detection matches one truth at most
    tp = first.height
    n_det, n_true = det.height, tru.height
    prec = tp / n_det if n_det else float("nan")
    rec = tp / n_true if n_true else float("nan")
    f1 = 2 * prec * rec / (prec + rec) if n_det and n_true and (prec + rec) > 0 else 0.0
    delays = (first["d"] - first["s"]).to_numpy() if tp else np.zeros(0)
    stable = np.asarray(stable_users, np.int64)
    fa_users = np.intersect1d(np.unique(det["u"].to_numpy()), stable)
    return {
        "precision": prec, "recall": rec, "f1": f1,
        "median_delay_events": float(np.median(delays)) if tp else float("nan"),
        "mean_delay_events": float(delays.mean()) if tp else float("nan"),
        "p90_delay_events": float(np.quantile(delays, 0.9)) if tp else float("nan"),
        "false_alarm_rate_stable_users": len(fa_users) / len(stable) if len(stable) else float("nan"),
        "detections": n_det, "true_shifts": n_true, "matched": tp, "stable_users": int(len(stable)),
        "tolerance_events": tolerance,
    }


def truth_arrays(ev: InterestEvents, users: pl.DataFrame) -> dict[str, np.ndarray]:
    """Map a synthetic store's truth table (user_id, kind, shift_index) onto InterestEvents rows."""
    idx = ev.user_index()
    u = users.filter(pl.col("user_id").is_in(list(idx)))
    rows = np.array([idx[x] for x in u["user_id"].to_list()], dtype=np.int64)
    kind = u["kind"].to_numpy()
    shifted = kind != "stable"
    return {"truth_user": rows[shifted], "truth_index": u["shift_index"].to_numpy()[shifted].astype(np.int64),
            "truth_kind": kind[shifted], "stable_users": rows[~shifted]}


def calibrate(ev: InterestEvents, truth: dict[str, np.ndarray], grid: dict[str, list[Any]],
              base: ShiftConfig = ShiftConfig(), max_false_alarm: float = 0.05,
              max_median_delay: float = 3.0, tolerance: int = 10,
              progress: Progress | None = None) -> tuple[ShiftConfig, list[dict[str, Any]]]:
    """Grid search on a calibration set with planted truth. Picks the highest F1 among configs
    meeting both the false-alarm and the median-delay targets; else the highest F1 meeting the
    false-alarm target; else the highest F1. Returns (config, one row per grid point)."""
    import dataclasses
    import itertools

    keys = list(grid)
    rows: list[dict[str, Any]] = []
    combos = list(itertools.product(*grid.values()))
    for i, vals in enumerate(combos):
        try:
            cfg = dataclasses.replace(base, **dict(zip(keys, vals, strict=True)))
        except ConfigError:
            continue
        res = ShiftDetector(ev.n_topics, cfg).detect(ev)
        m = evaluate_detection(res.user, res.event_index, truth["truth_user"], truth["truth_index"],
                               truth["stable_users"], tolerance)
        rows.append({**dict(zip(keys, vals, strict=True)), **m, "_cfg": cfg})
        if progress is not None:
            progress(i + 1, len(combos))
    if not rows:
        raise ConfigError("calibration grid has no valid configuration")

    def ok_fa(r: dict[str, Any]) -> bool:
        return r["false_alarm_rate_stable_users"] <= max_false_alarm

    def ok_delay(r: dict[str, Any]) -> bool:
        return bool(r["median_delay_events"] <= max_median_delay)

    for pool in ([r for r in rows if ok_fa(r) and ok_delay(r)], [r for r in rows if ok_fa(r)], rows):
        if pool:
            best = max(pool, key=lambda r: r["f1"])
            break
    table = [{k: v for k, v in r.items() if k != "_cfg"} for r in rows]
    return best["_cfg"], table
