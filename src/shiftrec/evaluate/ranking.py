"""Full-ranking evaluation over all items (never sampled), with slices, and the metrics.json
writer (with the per-user ranks beside it, for paired tests between runs)."""

from __future__ import annotations

import enum
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shiftrec.data.splits import EvalSet, SeqSplit
from shiftrec.errors import ArtifactError, ConfigError, InputError
from shiftrec.evaluate.metrics import KS, all_metrics, ranks_from_scores
from shiftrec.evaluate.slices import PopularityBins, popularity_metrics, target_train_counts
from shiftrec.manifest import atomic_write_bytes, make_manifest, read_json, write_json

#: Scores held at once by rank_targets (floats): rows per model.score call are capped at
#: SCORE_BUDGET // (n_items + 1) so a large catalogue cannot allocate gigabytes per batch.
SCORE_BUDGET = 1 << 24
FIRST_BATCH = 256


def rank_targets(model: Any, evalset: EvalSet, batch_size: int = 2048, max_len: int = 50,
                 exclude_history: bool = False, progress: Any = None) -> np.ndarray:
    """Score every item for each user in `evalset` and return the 1-based rank of the target
    (evaluation order), counting the items that score at least as high (no sort; see
    metrics.ranks_from_scores for ties and NaN).

    Users are scored in order of history length (`batch_size` at a time, fewer when the
    catalogue is large; see SCORE_BUDGET), so each batch holds histories of similar length and a
    sequence model pads little; the ranks are put back in evaluation order. `model.score` may
    return a numpy array or a torch tensor: a tensor on an accelerator is ranked there (only the
    ranks come back), a CPU tensor is ranked through numpy without a copy.

    `exclude_history` ranks each target among the items outside the user's history (every
    history item goes to -inf, the whole stored history, not only the `max_len` items the model
    reads, as `shiftrec serve` leaves out by default; a history item that is itself the target
    stays ranked: RecBole's convention for non-sequential models); off, every item is ranked
    (RecBole's and UniSRec's protocol for sequential models, and this project's default).
    """
    n = len(evalset)
    if n == 0:
        raise InputError("evaluation split is empty: no user has enough events to evaluate")
    ranks = np.empty(n, dtype=np.int64)
    lens = np.minimum(evalset.history.lengths(), max_len)
    order = np.argsort(lens, kind="stable")
    batch_size = max(1, batch_size)
    step, a = min(batch_size, FIRST_BATCH), 0
    while a < n:
        rows = order[a:a + step]
        hist = [evalset.history[i][-max_len:] for i in rows]
        times = [evalset.history.times_of(i)[-max_len:] for i in rows]
        scores = model.score(hist, times)
        if a == 0:
            # the first (small) call shows the catalogue size: cap the rows per call by it
            step = max(1, min(batch_size, SCORE_BUDGET // max(1, _n_cols(scores))))
        tgt = np.asarray(evalset.target[rows])
        # the whole stored history is excluded, not only the max_len items the model reads
        seen = [evalset.history[i] for i in rows] if exclude_history else None
        ranks[rows] = _rank_batch(scores, tgt, seen)
        if progress is not None:
            progress(len(rows))
        a += len(rows)
    return ranks


def _n_cols(scores: Any) -> int:
    return int(scores.shape[1]) if getattr(scores, "ndim", 0) == 2 else 1


def _rank_batch(scores: Any, targets: np.ndarray, exclude: list[np.ndarray] | None) -> np.ndarray:
    """Ranks of one batch of scores (numpy array or torch tensor) as float32, like the scores
    evaluation has always ranked; `exclude` (the histories) masks each history item other
    than the target to -inf."""
    if type(scores).__module__.startswith("torch"):
        if scores.device.type != "cpu":
            return _rank_torch(scores, targets, exclude)
        scores = scores.detach().float().numpy()  # float32 as before (bf16 has no numpy dtype)
    scores = np.asarray(scores, dtype=np.float32)
    if exclude is not None:
        r, c = history_cells(exclude, targets)
        scores[r, c] = -np.inf
    return ranks_from_scores(scores, targets)


def seen_items(exclude_history: bool) -> str:
    """What a metrics file records (`seen_items`) for rank_targets' `exclude_history`; a file
    written before it was recorded ranked every item."""
    return "excluded" if exclude_history else "ranked"


def history_cells(histories: list[np.ndarray], targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, item) of every history item that is not the row's target."""
    lens = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    rows = np.repeat(np.arange(len(histories)), lens)
    items = np.concatenate(histories).astype(np.int64) if lens.sum() else np.zeros(0, np.int64)
    keep = items != targets[rows]
    return rows[keep], items[keep]


def _rank_torch(scores: Any, targets: np.ndarray, exclude: list[np.ndarray] | None) -> np.ndarray:
    """ranks_from_scores on the scores' device (same counts: s >= target, padding column off,
    NaN or -inf target = the number of real items)."""
    import torch

    s = scores.detach().float()
    tg = torch.as_tensor(targets, dtype=torch.long, device=s.device)
    if exclude is not None:
        r, c = history_cells(exclude, targets)
        s = s.clone()
        s[torch.as_tensor(r, device=s.device), torch.as_tensor(c, device=s.device)] = float("-inf")
    t = s.gather(1, tg[:, None])
    ranks = (s >= t).sum(1) - (s[:, 0] >= t[:, 0]).long()
    low = ~(t[:, 0] > float("-inf"))
    ranks = torch.where(low, torch.full_like(ranks, s.shape[1] - 1), ranks)
    return ranks.cpu().numpy().astype(np.int64)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """(B, k) item indices of the k best real items per row (column 0 = padding never chosen),
    best first, ties in item-index order: exactly `np.argsort(-s[:, 1:], kind="stable")[:, :k] + 1`
    (NaN counts as -inf), but from one partition pass plus a sort of k items per row, without
    ordering (or copying the order of) the whole catalogue. k is capped at the item count."""
    s = np.asarray(scores)[:, 1:]
    b, n = s.shape
    k = min(int(k), n)
    if k <= 0 or b == 0:
        return np.zeros((b, max(k, 0)), dtype=np.int64)
    if s.dtype.kind == "f" and np.isnan(s).any():
        s = np.where(np.isnan(s), -np.inf, s)
    if k == n:
        return np.argsort(-s, axis=1, kind="stable") + 1
    thr = -np.partition(-s, k - 1, axis=1)[:, k - 1:k]  # the k-th best score of each row
    above = s > thr
    tie = s == thr
    need = k - above.sum(1, keepdims=True)  # how many ties at the threshold make the cut
    chosen = above | (tie & (np.cumsum(tie, axis=1) <= need))  # lowest item indices first
    idx = np.nonzero(chosen)[1].reshape(b, k)  # ascending item index within each row
    val = np.take_along_axis(s, idx, axis=1)
    order = np.argsort(-val, axis=1, kind="stable")  # stable: ties keep item-index order
    return np.take_along_axis(idx, order, axis=1).astype(np.int64) + 1


class EvalSplit(enum.StrEnum):
    """Which held-out set to evaluate."""

    VALID = "valid"
    TEST = "test"

    @classmethod
    def of(cls, which: EvalSplit | str) -> EvalSplit:
        """The enum member for `which` (a member or its string value); anything else is a
        ConfigError listing the valid names (so a typo such as 'tset' cannot evaluate valid)."""
        try:
            return cls(which)
        except ValueError:
            raise ConfigError(f"unknown evaluation split '{which}'; valid: "
                              f"{', '.join(m.value for m in cls)}") from None


def eval_set(split: SeqSplit, which: EvalSplit | str) -> EvalSet:
    return split.test if EvalSplit.of(which) == EvalSplit.TEST else split.valid


def evaluate(model: Any, split: SeqSplit, which: EvalSplit | str = EvalSplit.TEST,
             ks: tuple[int, ...] = KS, **kw: Any) -> tuple[dict[str, float], np.ndarray]:
    es = eval_set(split, which)
    ranks = rank_targets(model, es, **kw)
    return all_metrics(ranks, ks), ranks


def sliced(ranks: np.ndarray, masks: dict[str, np.ndarray], ks: tuple[int, ...] = KS) -> dict[str, dict[str, float]]:
    return {name: all_metrics(ranks[m], ks) for name, m in masks.items()}


# ------------------------------------------------------------------------- per-user ranks

RANKS_SUFFIX = ".ranks.npz"
RANKS_KIND = "per-user-ranks"


@dataclass
class UserRanks:
    """One evaluation's per-user result: the 1-based rank of each evaluated user's target.

    Arrays are aligned (evaluation order): `user_id` (the split's user ids, str), `user_index`
    (row in SeqSplit.user_ids), `target` (item index of the held-out item), `rank`. `which` is
    the evaluated set (test/valid); `split_kind` and `fingerprint` identify the split and data.
    """

    user_id: np.ndarray
    user_index: np.ndarray
    target: np.ndarray
    rank: np.ndarray
    which: str
    split_kind: str | None = None
    fingerprint: str | None = None
    #: training interactions of each user's target item (evaluate.slices); None when unknown
    #: (not stored in the ranks file: metrics.json holds the slice metrics it gives)
    target_train_count: np.ndarray | None = None

    @classmethod
    def of(cls, split: SeqSplit, which: str, ranks: np.ndarray) -> UserRanks:
        """The per-user ranks `evaluate(model, split, which)` returned, with who they belong to."""
        which = EvalSplit.of(which).value
        es = eval_set(split, which)
        if len(ranks) != len(es):
            raise InputError(f"{len(ranks)} ranks for the {len(es)} {which} users of split "
                             f"'{split.name}'")
        users = np.asarray(es.users, dtype=np.int64)
        return cls(np.asarray(split.user_ids[users]).astype(str), users,
                   np.asarray(es.target, dtype=np.int64), np.asarray(ranks, dtype=np.int64), which,
                   split.kind, split.meta.get("fingerprint"), target_train_counts(split, es))

    def digest(self, field_name: str) -> str:
        a = getattr(self, field_name)
        data = "\n".join(a.tolist()).encode() if a.dtype.kind == "U" else a.astype("<i8").tobytes()
        return hashlib.sha1(data).hexdigest()[:16]

    def manifest(self, file: str) -> dict[str, Any]:
        return {"kind": RANKS_KIND, "file": file, "split": self.which, "split_kind": self.split_kind,
                "data_fingerprint": self.fingerprint, "n_users": int(len(self.rank)),
                "users_sha1": self.digest("user_id"), "targets_sha1": self.digest("target"),
                "ranks_sha1": self.digest("rank")}


def ranks_path(metrics_path: str | Path) -> Path:
    """Where the per-user ranks of a metrics file live: metrics.json -> metrics.ranks.npz."""
    p = Path(metrics_path)
    return p.with_name(p.stem + RANKS_SUFFIX)


def write_metrics(path: str | Path, metrics: dict[str, Any], model_manifest: dict[str, Any] | None,
                  data_manifest: dict[str, Any] | None, *, split: str | None = None,
                  per_user: UserRanks | None = None,
                  popularity_bins: PopularityBins = PopularityBins(), **extra: Any) -> None:
    """metrics.json (metrics at the top level, the model's and the data's manifests) and, with
    `per_user`, the per-user ranks beside it (metrics.ranks.npz), recorded under "per_user".

    When the per-user ranks know each target's training count (UserRanks.of does), metrics.json
    also holds "slices": {"cold": metrics, "warm": metrics} by target-item popularity in
    training and "slice_definitions": {"popularity": the bin edges and ranges} (evaluate.slices).
    """
    if per_user is not None and per_user.target_train_count is not None and "slices" not in extra:
        ks = tuple(sorted({int(k.split("@")[1]) for k in metrics if k.startswith("ndcg@")})) or KS
        extra["slices"] = popularity_metrics(per_user.rank, per_user.target_train_count,
                                             popularity_bins, ks)
        extra["slice_definitions"] = {"popularity": popularity_bins.describe()}
    if per_user is not None:
        if split is not None and split != per_user.which:
            raise InputError(f"metrics of the {split} split but per-user ranks of the "
                             f"{per_user.which} split")
        split = per_user.which
        rp = ranks_path(path)
        buf = io.BytesIO()
        np.savez(buf, user_id=per_user.user_id.astype(str), user_index=per_user.user_index,
                 target=per_user.target, rank=per_user.rank)
        atomic_write_bytes(rp, buf.getvalue())
        extra["per_user"] = per_user.manifest(rp.name)
    if split is not None:
        extra = {"split": split, **extra}
    write_json(path, make_manifest("metrics", metrics=metrics, model=model_manifest,
                                   data=data_manifest, **extra) | dict(metrics))


def metrics_file(run: str | Path) -> Path:
    """The metrics JSON of a run: the path itself, or metrics.json inside a run folder."""
    p = Path(run)
    return p / "metrics.json" if p.is_dir() else p


def read_user_ranks(metrics_path: str | Path) -> tuple[UserRanks, dict[str, Any]]:
    """(per-user ranks, metrics.json) of a run; `metrics_path` is metrics.json or its folder.

    Strict: the ranks file must be the one metrics.json records (same users, targets, ranks)."""
    p = metrics_file(metrics_path)
    if not p.exists():
        raise InputError("metrics file not found (expected a run folder with metrics.json, or the "
                         "metrics JSON file itself)", path=p)
    try:
        man = read_json(p)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"not a metrics file: {e}", path=p) from None
    if not isinstance(man, dict) or man.get("kind") != "metrics":
        raise ArtifactError("not a metrics file (kind is not 'metrics')", path=p)
    rec = man.get("per_user")
    if not isinstance(rec, dict) or rec.get("kind") != RANKS_KIND:
        raise ArtifactError("no per-user ranks recorded (written before they were kept?); "
                            "re-run the evaluation", path=p)
    rp = p.with_name(str(rec.get("file")))
    if not rp.exists():
        raise ArtifactError(f"per-user ranks file {rp.name} recorded in {p.name} is missing", path=rp)
    try:
        with np.load(rp, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("user_id", "user_index", "target", "rank")}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise ArtifactError(f"cannot read per-user ranks: {e}", path=rp) from None
    ur = UserRanks(arrays["user_id"].astype(str), arrays["user_index"].astype(np.int64),
                   arrays["target"].astype(np.int64), arrays["rank"].astype(np.int64),
                   str(rec.get("split")), rec.get("split_kind"), rec.get("data_fingerprint"))
    n = len(ur.rank)
    if any(len(a) != n for a in (ur.user_id, ur.user_index, ur.target)) or n != rec.get("n_users"):
        raise ArtifactError(f"per-user ranks hold {n} users but {p.name} records "
                            f"{rec.get('n_users')}", path=rp)
    for key, fld in (("users_sha1", "user_id"), ("targets_sha1", "target"), ("ranks_sha1", "rank")):
        if rec.get(key) != ur.digest(fld):
            raise ArtifactError(f"per-user ranks do not match {p.name} ({fld} differs)", path=rp)
    return ur, man
