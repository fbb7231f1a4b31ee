"""Causal all-prefix batches: one left-aligned window per user supervises all its prefixes at once.

A training sequence s[0..n-1] gives inputs s[0..n-2] and labels s[1..n-1]; a causal encoder
reading the inputs predicts every label from exactly the items before it. Windows hold at most
`max_len` inputs, so a label never sees more than `max_len` items of history. Sequences longer
than max_len + 1 get extra windows every `stride` items; each extra window supervises only the
labels no earlier window covered, so every target is supervised exactly once per epoch (its
history then holds between max_len - stride + 1 and max_len items; stride=1 gives every target
its full last-max_len history, as separate prefix samples would).

Windows are left-aligned (right-padded with 0) so that position p always means "the p-th item of
the history" both in training and at scoring time. Batches are packed by a budget of supervised
targets (like RecBole's batch of prefix samples) after bucketing windows by length, and each
batch is trimmed to its longest window, which removes almost all padding work.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from shiftrec.data.splits import Seqs
from shiftrec.errors import InputError


@dataclass(frozen=True)
class Windows:
    """Flat description of all training windows: source offset, input length, first label kept."""

    start: np.ndarray  # offset into Seqs.items of the window's first input item
    length: np.ndarray  # number of inputs (= number of label positions) in the window
    keep_from: np.ndarray  # label positions < keep_from are masked (already supervised)
    user: np.ndarray  # row of the sequence in Seqs

    def __len__(self) -> int:
        return len(self.start)

    @property
    def n_targets(self) -> int:
        return int((self.length - self.keep_from).sum())


def causal_windows(seqs: Seqs, max_len: int = 50, stride: int = 10) -> Windows:
    """All windows of `seqs` (vectorised). Sequences with fewer than 2 items give no window.
    A stride above max_len is clamped to max_len."""
    if max_len < 1 or stride < 1:
        raise InputError(f"need max_len >= 1 and stride >= 1 (got {max_len}, {stride})")
    stride = min(stride, max_len)
    lens = seqs.lengths()
    n_tgt = np.maximum(lens - 1, 0)  # targets per sequence: positions 1..n-1
    extra = np.where(n_tgt > max_len, -(-(n_tgt - max_len) // stride), 0)
    n_win = np.where(n_tgt > 0, 1 + extra, 0)
    user = np.repeat(np.arange(len(lens)), n_win)
    k = np.arange(len(user)) - np.repeat(np.cumsum(n_win) - n_win, n_win)  # window index in its user
    # window start within the sequence; the last extra window is aligned to the sequence end
    s = np.where(k == 0, 0, np.minimum(k * stride, n_tgt[user] - max_len))
    length = np.minimum(max_len, n_tgt[user] - s)
    end = s + length  # window covers targets s+1 .. end
    prev_end = np.where(k == 0, 0, np.roll(end, 1))
    keep_from = np.maximum(prev_end - s, 0)
    return Windows(seqs.indptr[user] + s, length.astype(np.int64), keep_from.astype(np.int64),
                   user.astype(np.int64))


def _gather(items: np.ndarray, start: np.ndarray, length: np.ndarray, width: int, shift: int
            ) -> np.ndarray:
    pos = np.arange(width)
    valid = pos[None, :] < length[:, None]
    idx = np.where(valid, start[:, None] + pos[None, :] + shift, 0)
    return np.where(valid, items[idx], 0)


class CausalBatches:
    """A trainer batch source: `(epoch, rng, batch_size) -> iterator of {"seq", "labels"}`.

    seq (B, W) int64 inputs, left-aligned and right-padded with 0; labels (B, W) int64 with 0 where
    nothing is supervised. `batch_size` counts supervised targets per batch (a batch of prefix
    samples), and `bucket` sorts windows by length inside chunks of `bucket_chunk` batches so
    that batches carry little padding. Extra per-window arrays (e.g. item times) can be added by
    subclassing `extra`.
    """

    def __init__(self, seqs: Seqs, max_len: int = 50, stride: int = 10, bucket: bool = True,
                 bucket_chunk: int = 0, with_times: bool = False,
                 groups: np.ndarray | None = None) -> None:
        self.seqs = seqs
        self.max_len = max_len
        self.windows = causal_windows(seqs, max_len, stride)
        if len(self.windows) == 0:
            raise InputError("no training sequence has 2 or more items: nothing to supervise")
        self.bucket = bucket
        self.bucket_chunk = bucket_chunk
        self.with_times = with_times
        # groups: a group id per sequence row; a batch then holds windows of one group only
        # (e.g. one source domain per pretraining batch, so in-batch negatives share its domain)
        self.window_group: np.ndarray | None = None
        if groups is not None:
            groups = np.asarray(groups)
            if groups.shape != (len(seqs),):
                raise InputError(f"groups must give one id per sequence ({len(seqs)}); "
                                 f"got shape {groups.shape}")
            self.window_group = groups[self.windows.user]

    @property
    def n_targets(self) -> int:
        return self.windows.n_targets

    def order(self, rng: np.random.Generator, batch_size: int) -> list[np.ndarray]:
        """Window indices of each batch for one epoch (shuffled, optionally length-bucketed;
        with groups, each batch is packed from one group's windows)."""
        if self.window_group is None:
            batches = self._pack(np.arange(len(self.windows)), rng, batch_size)
        else:
            batches = [b for g in np.unique(self.window_group)
                       for b in self._pack(np.flatnonzero(self.window_group == g), rng, batch_size)]
        order = rng.permutation(len(batches))
        return [batches[i] for i in order]

    def _pack(self, ids: np.ndarray, rng: np.random.Generator, batch_size: int) -> list[np.ndarray]:
        """Shuffle (and bucket) the windows `ids`, then pack them greedily into batches of at most
        `batch_size` supervised targets."""
        w = self.windows
        perm = ids[rng.permutation(len(ids))]
        if self.bucket:
            sup = (w.length - w.keep_from)[perm]
            chunk_targets = self.bucket_chunk * batch_size if self.bucket_chunk else None
            if chunk_targets:
                chunk = np.cumsum(sup) // chunk_targets
                key = np.lexsort((w.length[perm], chunk))
            else:
                key = np.argsort(w.length[perm], kind="stable")
            perm = perm[key]
        sup = (w.length - w.keep_from)[perm].tolist()
        cuts, acc, budget = [], 0, max(int(batch_size), 1)
        for i, n in enumerate(sup):  # greedy packing: at most `budget` targets per batch
            if acc and acc + n > budget:
                cuts.append(i)
                acc = 0
            acc += n
        return np.split(perm, cuts)

    def make(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        w = self.windows
        start, length, keep = w.start[idx], w.length[idx], w.keep_from[idx]
        width = int(length.max())
        seq = _gather(self.seqs.items, start, length, width, 0)
        labels = _gather(self.seqs.items, start, length, width, 1)
        labels[np.arange(width)[None, :] < keep[:, None]] = 0
        out = {"seq": seq, "labels": labels}
        if self.with_times:
            out["times"] = _gather(self.seqs.times, start, length, width, 0)
            out["label_times"] = _gather(self.seqs.times, start, length, width, 1)
        return out

    def __call__(self, epoch: int, rng: np.random.Generator, batch_size: int
                 ) -> Iterator[dict[str, np.ndarray]]:
        for idx in self.order(rng, batch_size):
            yield self.make(idx)


def pad_left(histories: list[np.ndarray], max_len: int) -> np.ndarray:
    """Right-aligned padded matrix (batch, max_len) keeping the last max_len items; pad = 0."""
    out = np.zeros((len(histories), max_len), dtype=np.int64)
    for i, h in enumerate(histories):
        h = h[-max_len:]
        if len(h):
            out[i, max_len - len(h):] = h
    return out
