"""Per-user topic sequences in CSR form, built from an events frame and item topics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from shiftrec.errors import InputError
from shiftrec.interest.topics import Topics


@dataclass
class InterestEvents:
    """Each user's events in time order: topic id, unix-second time, original position.

    Events whose item has no topic are dropped; `pos` keeps each kept event's index in the
    user's full (time-ordered) event sequence so reported event indices refer to the raw data.
    """

    user_ids: np.ndarray  # object array, one per user (users with >= 1 kept event)
    indptr: np.ndarray  # int64 (n_users + 1)
    topic: np.ndarray  # int64
    time: np.ndarray  # int64 unix seconds
    pos: np.ndarray  # int64 index within the user's full sequence
    n_topics: int
    dropped: int = 0  # events without a topic

    def __len__(self) -> int:
        return len(self.user_ids)

    @property
    def n_events(self) -> int:
        return int(self.indptr[-1])

    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def user_index(self) -> dict[str, int]:
        return {str(u): i for i, u in enumerate(self.user_ids)}

    def of(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a, b = self.indptr[i], self.indptr[i + 1]
        return self.topic[a:b], self.time[a:b], self.pos[a:b]

    @classmethod
    def from_arrays(cls, user_ids: np.ndarray, indptr: np.ndarray, topic: np.ndarray,
                    time: np.ndarray, n_topics: int) -> InterestEvents:
        indptr = np.asarray(indptr, np.int64)
        pos = np.arange(indptr[-1], dtype=np.int64) - np.repeat(indptr[:-1], np.diff(indptr))
        return cls(np.asarray(user_ids, dtype=object), indptr, np.asarray(topic, np.int64),
                   np.asarray(time, np.int64), pos, n_topics)

    @classmethod
    def from_frame(cls, events: pl.DataFrame, topics: Topics) -> InterestEvents:
        """events: user_id, item_id, timestamp (datetime or unix seconds), domain (optional)."""
        need = [c for c in ("user_id", "item_id", "timestamp") if c not in events.columns]
        if need:
            raise InputError(f"events lack column(s) {need}", column=need[0])
        ts = events.schema["timestamp"]
        t_expr = pl.col("timestamp").dt.epoch("s") if isinstance(ts, pl.Datetime) \
            else pl.col("timestamp").cast(pl.Int64)
        dom = pl.col("domain") if "domain" in events.columns else pl.lit(None, pl.String)
        tab = topics.table().select("domain", "item_id", "topic")
        ev = (events.lazy().select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String),
                                   dom.cast(pl.String).alias("domain"), t_expr.alias("t"))
              .with_row_index("__r")
              .sort("user_id", "t", "__r")
              .with_columns(pl.int_range(pl.len()).over("user_id").alias("pos"))
              .join(tab.lazy(), on=["domain", "item_id"], how="left", maintain_order="left")
              .collect())
        if ev["domain"].null_count() == ev.height and ev.height:
            # events without domain: match on item id alone when ids are unique in the topics
            alt = tab.unique("item_id", keep="first").select("item_id", pl.col("topic").alias("t2"))
            ev = ev.drop("topic").join(alt, on="item_id", how="left", maintain_order="left").rename({"t2": "topic"})
        n_all = ev.height
        ev = ev.filter(pl.col("topic").is_not_null())
        users = ev["user_id"].to_numpy()
        if len(users):
            change = np.ones(len(users), dtype=bool)
            change[1:] = users[1:] != users[:-1]
            starts = np.flatnonzero(change)
        else:
            starts = np.zeros(0, np.int64)
        indptr = np.concatenate([starts, [len(users)]]).astype(np.int64)
        return cls(users[starts].astype(object), indptr, ev["topic"].to_numpy().astype(np.int64),
                   ev["t"].to_numpy().astype(np.int64), ev["pos"].to_numpy().astype(np.int64),
                   topics.n_topics, dropped=n_all - ev.height)
