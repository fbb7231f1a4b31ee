"""Splits: leave-one-out (UniSRec), global temporal, cross-domain. Arrays + npz + manifest."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from shiftrec.data.schema import Dataset
from shiftrec.errors import ArtifactError, InputError
from shiftrec.manifest import atomic_dir, make_manifest, read_json, require_complete, write_json

MAX_LEN = 50
PAD = 0


@dataclass
class IdMap:
    """One id map per domain: item key 'domain/item_id' <-> dense index (0 is padding)."""

    keys: np.ndarray  # object array of "domain/item_id", keys[0] == "<pad>"

    @classmethod
    def from_frame(cls, items: pl.DataFrame) -> IdMap:
        k = items.select((pl.col("domain") + "/" + pl.col("item_id")).alias("k"))["k"].to_list()
        return cls(np.array(["<pad>", *k], dtype=object))

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def n_items(self) -> int:
        return len(self.keys) - 1

    def index(self) -> dict[str, int]:
        return {k: i for i, k in enumerate(self.keys)}

    def frame(self) -> pl.DataFrame:
        """domain, item_id, idx for every real item."""
        parts = [k.split("/", 1) for k in self.keys[1:]]
        return pl.DataFrame({"domain": [p[0] for p in parts], "item_id": [p[1] for p in parts],
                             "idx": np.arange(1, len(self.keys), dtype=np.int64)})


@dataclass
class Seqs:
    """Ragged int sequences in CSR form (indptr, values) with aligned unix-second times."""

    indptr: np.ndarray
    items: np.ndarray
    times: np.ndarray

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.items[self.indptr[i]:self.indptr[i + 1]]

    def times_of(self, i: int) -> np.ndarray:
        return self.times[self.indptr[i]:self.indptr[i + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def to_list(self) -> list[np.ndarray]:
        return [self[i] for i in range(len(self))]

    @classmethod
    def from_lists(cls, seqs: list[np.ndarray], times: list[np.ndarray] | None = None) -> Seqs:
        lens = np.array([len(s) for s in seqs], dtype=np.int64)
        indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        items = np.concatenate(seqs).astype(np.int64) if seqs else np.zeros(0, np.int64)
        t = (np.concatenate(times).astype(np.int64) if times is not None and seqs
             else np.zeros_like(items))
        return cls(indptr, items, t)


@dataclass
class EvalSet:
    """Users to evaluate: their history (cut to the last max_len) and one target each."""

    users: np.ndarray  # index into SeqSplit.user_ids
    history: Seqs
    target: np.ndarray
    target_time: np.ndarray

    def __len__(self) -> int:
        return len(self.target)


@dataclass
class SeqSplit:
    name: str
    kind: str
    item_map: IdMap
    user_ids: np.ndarray
    train: Seqs  # one training sequence per user (aligned with user_ids), uncut
    valid: EvalSet
    test: EvalSet
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return self.item_map.n_items

    def save(self, out_dir: str | Path, manifest_extra: dict[str, Any] | None = None) -> Path:
        """Write the split folder atomically (temporary sibling, `_COMPLETE` marker, swap)."""
        with atomic_dir(out_dir) as tmp:
            self._write_into(tmp, manifest_extra)
        return Path(out_dir)

    def _write_into(self, out: Path, manifest_extra: dict[str, Any] | None) -> None:
        arrays: dict[str, np.ndarray] = {
            "item_keys": self.item_map.keys.astype(str), "user_ids": self.user_ids.astype(str),
            "train_indptr": self.train.indptr, "train_items": self.train.items,
            "train_times": self.train.times}
        for nm, es in (("valid", self.valid), ("test", self.test)):
            arrays |= {f"{nm}_users": es.users, f"{nm}_indptr": es.history.indptr,
                       f"{nm}_items": es.history.items, f"{nm}_times": es.history.times,
                       f"{nm}_target": es.target, f"{nm}_target_time": es.target_time}
        np.savez_compressed(out / "split.npz", **arrays)
        write_json(out / "split.json", make_manifest(
            "split", name=self.name, split_kind=self.kind, n_users=len(self.user_ids),
            n_items=self.n_items, n_valid=len(self.valid), n_test=len(self.test),
            meta=self.meta, **(manifest_extra or {})))

    @classmethod
    def load(cls, path: str | Path) -> SeqSplit:
        """Alias of `open_split(path)`."""
        return open_split(path)


def open_split(path: str | Path) -> SeqSplit:
    """The one way to read a split folder (written by `shiftrec prepare` / `SeqSplit.save`);
    an incomplete folder (no `_COMPLETE` marker), a missing or unreadable file is one line."""
    import zipfile

    p = Path(path)
    if p.is_dir() and not (p / "split.json").exists():
        subs = sorted(d.name for d in p.iterdir() if (d / "split.json").exists())
        hint = f" (it holds the splits {', '.join(subs)}: pass one of them)" if subs else ""
        raise ArtifactError(f"not a split folder (split.json missing){hint}", path=p)
    require_complete(p, "split folder")
    man = read_json(p / "split.json")
    if not isinstance(man, dict) or man.get("kind") != "split":
        raise ArtifactError("split.json is not a split manifest", path=p / "split.json")
    try:
        with np.load(p / "split.npz", allow_pickle=False) as npz:
            z = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise ArtifactError("split.npz missing", path=p) from None
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ArtifactError(f"cannot read split.npz: {str(e).splitlines()[0]}", path=p / "split.npz") from None

    def arr(k: str) -> np.ndarray:
        if k not in z:
            raise ArtifactError(f"array '{k}' missing", path=p / "split.npz")
        return z[k]

    def es(nm: str) -> EvalSet:
        return EvalSet(arr(f"{nm}_users"), Seqs(arr(f"{nm}_indptr"), arr(f"{nm}_items"), arr(f"{nm}_times")),
                       arr(f"{nm}_target"), arr(f"{nm}_target_time"))

    return SeqSplit(name=man.get("name", p.name), kind=man.get("split_kind", "unknown"),
                    item_map=IdMap(arr("item_keys").astype(object)),
                    user_ids=arr("user_ids").astype(object),
                    train=Seqs(arr("train_indptr"), arr("train_items"), arr("train_times")),
                    valid=es("valid"), test=es("test"), meta=man.get("meta", {}))


def _indexed(ds: Dataset, item_map: IdMap | None) -> tuple[pl.DataFrame, IdMap]:
    """user_id, t (unix s) and idx (dense item index) per event, in event order."""
    ev = ds.events
    if item_map is None:
        # index every item seen in events (first appearance order), plus catalogue-only items;
        # integer codes of (domain, item) find first appearances without a join over the events
        from shiftrec.data.clean import item_user_codes

        code = ds.codes()
        if code is None:
            _, code = item_user_codes(ev, users=False)
        first = pl.Series(code).is_first_distinct().arg_true()
        seen = ev[first].select("domain", "item_id")
        cat = ds.items.select("domain", "item_id").join(seen, on=["domain", "item_id"], how="anti")
        item_map = IdMap.from_frame(pl.concat([seen, cat]))
        # code -> item index (1-based, in first-appearance order); codes need not be dense
        order = np.zeros(int(code.max(initial=0)) + 1, dtype=np.int64)
        order[code[first.to_numpy()]] = np.arange(1, len(first) + 1)
        out = ev.select("user_id", pl.col("timestamp").dt.epoch("s").alias("t")).with_columns(
            pl.Series("idx", order[code]))
        return out, item_map
    idx = item_map.frame()
    out = (ev.select("user_id", "domain", "item_id",
                     pl.col("timestamp").dt.epoch("s").alias("t"))
           .join(idx, on=["domain", "item_id"], how="left", maintain_order="left"))
    if out["idx"].null_count():
        raise InputError(f"{out['idx'].null_count()} events refer to items missing from the id map")
    return out, item_map


def _group(df: pl.DataFrame) -> tuple[np.ndarray, Seqs]:
    """df sorted by user then time -> (user ids, Seqs)."""
    change = df.select((pl.col("user_id") != pl.col("user_id").shift(1)).fill_null(True).alias("c"))["c"]
    starts = change.arg_true().to_numpy().astype(np.int64)
    indptr = np.concatenate([starts, [df.height]]).astype(np.int64)
    users = df["user_id"].gather(starts).to_numpy().astype(object)
    return users, Seqs(indptr, df["idx"].to_numpy().astype(np.int64), df["t"].to_numpy().astype(np.int64))


def _ranges(n: int, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Boolean mask of the union of [starts, ends) (sorted, non-overlapping ranges)."""
    if len(starts) == 0:
        return np.zeros(n, dtype=bool)
    gaps = starts - np.concatenate([[0], ends[:-1]])
    runs = np.empty(2 * len(starts) + 1, dtype=np.int64)
    runs[0:-1:2], runs[1::2], runs[-1] = gaps, ends - starts, n - ends[-1]
    flags = np.zeros(len(runs), dtype=bool)
    flags[1::2] = True
    return np.repeat(flags, runs)


def _take_ranges(seqs: Seqs, starts: np.ndarray, ends: np.ndarray) -> Seqs:
    """Concatenate items[starts[k]:ends[k]] for sorted, non-overlapping ranges."""
    lens = ends - starts
    keep = lens > 0
    mask = _ranges(len(seqs.items), starts[keep], ends[keep])
    indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    return Seqs(indptr, seqs.items[mask], seqs.times[mask])


def _cut_last(seqs: Seqs, rows: np.ndarray, ends: np.ndarray, max_len: int) -> Seqs:
    """History = items [max(start, end-max_len), end) of each selected row."""
    return _take_ranges(seqs, np.maximum(seqs.indptr[rows], ends - max_len), ends)


def leave_one_out(ds: Dataset, max_len: int = MAX_LEN, item_map: IdMap | None = None) -> SeqSplit:
    """UniSRec's split: last item test, last-but-one valid, histories cut to the last max_len.

    Users with fewer than 3 events keep everything in train and are not evaluated.
    """
    if ds.events.height == 0:
        raise InputError(f"dataset '{ds.name}' has no events to split")
    df, item_map = _indexed(ds, item_map)
    users, full = _group(df)
    lens = full.lengths()
    ok = np.flatnonzero(lens >= 3)
    train_lens = np.where(lens >= 3, lens - 2, lens)
    train = _take_ranges(full, full.indptr[:-1], full.indptr[:-1] + train_lens)
    ends_v = full.indptr[ok + 1] - 2
    ends_t = full.indptr[ok + 1] - 1
    valid = EvalSet(ok, _cut_last(full, ok, ends_v, max_len), full.items[ends_v], full.times[ends_v])
    test = EvalSet(ok, _cut_last(full, ok, ends_t, max_len), full.items[ends_t], full.times[ends_t])
    return SeqSplit(ds.name, "leave_one_out", item_map, users, train, valid, test,
                    meta={"max_len": max_len, "fingerprint": ds.fingerprint()})


def _quantile_time(df: pl.DataFrame, q: float) -> int:
    return int(df["t"].quantile(q, interpolation="lower"))


def temporal(ds: Dataset, test_start: int | float | None = None, valid_start: int | float | None = None,
             max_len: int = MAX_LEN, item_map: IdMap | None = None) -> SeqSplit:
    """Global temporal split. Times are unix seconds, or fractions in (0,1) read as quantiles of time.

    Train: every event before valid_start. Valid: each user's first event in [valid_start,
    test_start) with at least one earlier event. Test: each user's first event at or after
    test_start, with the history being all their events before test_start (cut to max_len).
    """
    if ds.events.height == 0:
        raise InputError(f"dataset '{ds.name}' has no events to split")
    df, item_map = _indexed(ds, item_map)
    ts = test_start if test_start is not None else 0.9
    vs = valid_start if valid_start is not None else 0.8
    ts = _quantile_time(df, ts) if 0 < ts < 1 else int(ts)
    vs = _quantile_time(df, vs) if 0 < vs < 1 else int(vs)
    if vs > ts:
        raise InputError(f"valid_start ({vs}) is after test_start ({ts})")
    users, full = _group(df)
    n = len(users)

    def first_at_or_after(t0: int) -> np.ndarray:
        # per user: global index of the first event with time >= t0 (the user's end if none)
        big = len(full.items)
        idx = np.where(full.times >= t0, np.arange(big), big)
        first = np.minimum.reduceat(idx, full.indptr[:-1]) if n else np.zeros(0, np.int64)
        return np.minimum(first, full.indptr[1:])

    cut_v = first_at_or_after(vs)
    cut_t = first_at_or_after(ts)
    train_lens = cut_v - full.indptr[:-1]
    train = _take_ranges(full, full.indptr[:-1], full.indptr[:-1] + train_lens)
    has_v = (cut_v > full.indptr[:-1]) & (cut_v < full.indptr[1:]) & (full.times[np.minimum(cut_v, len(full.times) - 1)] < ts)
    has_t = (cut_t > full.indptr[:-1]) & (cut_t < full.indptr[1:])
    uv, ut = np.flatnonzero(has_v), np.flatnonzero(has_t)
    valid = EvalSet(uv, _cut_last(full, uv, cut_v[uv], max_len), full.items[cut_v[uv]], full.times[cut_v[uv]])
    test = EvalSet(ut, _cut_last(full, ut, cut_t[ut], max_len), full.items[cut_t[ut]], full.times[cut_t[ut]])
    return SeqSplit(ds.name, "temporal", item_map, users, train, valid, test,
                    meta={"max_len": max_len, "valid_start": vs, "test_start": ts,
                          "fingerprint": ds.fingerprint()})


def by_domain(ds: Dataset, domain: str) -> Dataset:
    if domain not in ds.domains:
        raise InputError(f"domain '{domain}' not in dataset; domains: {', '.join(ds.domains)}")
    return Dataset(events=ds.events.filter(pl.col("domain") == domain),
                   items=ds.items.filter(pl.col("domain") == domain), name=f"{ds.name}:{domain}",
                   meta=ds.meta)


def cross_domain(ds: Dataset, sources: list[str], target: str, max_len: int = MAX_LEN
                 ) -> tuple[dict[str, SeqSplit], SeqSplit]:
    """Source domains and a target domain, each with its own id map (items namespaced by domain)."""
    if target in sources:
        raise InputError(f"target domain '{target}' is also listed as a source")
    src = {d: leave_one_out(by_domain(ds, d), max_len) for d in sources}
    return src, leave_one_out(by_domain(ds, target), max_len)
