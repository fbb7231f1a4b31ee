"""The shift-slice experiment as a library function (the recipe behind the README's shift table).

On one split and its item topics: train SASRec (the baseline and the warm start), fine-tune each
shift-aware variant of a preset from it (models.presets), choose the variant on validation with
evaluate.selection.SELECTION, fuse SASRec and the chosen variant with the item-level flows
(models.fusion.ShiftFusion, weights chosen on validation), choose the fusion's base with the same
rule, and only then evaluate the reported models on the test users, overall and on the shifted /
stable slices (interest.slices), with paired tests against SASRec.

Runs are resumable: each model's folder under OUT/runs/<run>/ holds the saved model, its per-user
ranks (ranks.npz) and row.json, written last; a run whose row.json exists is not trained again
(an interrupted training resumes from its per-epoch checkpoint). Test ranks of a run are computed
only once the selection is made.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shiftrec.errors import ConfigError, InputError
from shiftrec.evaluate.selection import (
    SELECTION,
    SHIFT_FIRST,
    select_shift_aware,
    select_shift_first,
    slice_metrics,
    slice_scores,
)
from shiftrec.manifest import (
    make_manifest,
    read_json,
    read_npz,
    write_json,
    write_npz,
)
from shiftrec.models.presets import CORE_VARIANTS, VARIANTS, Budget, Setting

KS = (10, 20)
BASELINES = ("popularity", "topic_profile", "itemknn")


@dataclass(frozen=True)
class ExperimentConfig:
    variants: tuple[str, ...] = CORE_VARIANTS
    sasrec_epochs: int = 40
    finetune_epochs: int = 8
    seed: int = 0
    budget: Budget = field(default_factory=Budget)
    baselines: bool = True  # popularity, topic profile (half-life chosen on validation), item-kNN
    fusion: bool = True  # ShiftFusion over SASRec and over the chosen variant
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not self.variants:
            raise ConfigError("experiment: give at least one shift-aware variant")
        from shiftrec.models.presets import variant_overrides

        for v in self.variants:
            variant_overrides(v)
        if len(set(self.variants)) != len(self.variants):
            raise ConfigError(f"experiment: repeated variant in {list(self.variants)}")
        if self.sasrec_epochs < 1 or self.finetune_epochs < 1:
            raise ConfigError("experiment: epoch caps must be >= 1")

    @classmethod
    def from_setting(cls, st: Setting, **overrides: Any) -> ExperimentConfig:
        return cls(**({"variants": st.variants, "sasrec_epochs": st.sasrec_epochs,
                       "finetune_epochs": st.finetune_epochs, "budget": st.budget} | overrides))


Step = Callable[[str], None]


class _Runs:
    """OUT/runs/<run>/: saved model + ranks.npz + row.json (the completion marker)."""

    def __init__(self, out: Path, split: Any, ident: dict[str, Any], step: Step) -> None:
        self.root = out / "runs"
        self.split, self.step = split, step
        self.ident = json.loads(json.dumps(ident))  # what every run here was made with
        self._cache: dict[str, Any] = {}  # models fitted in this process

    def dir(self, run: str) -> Path:
        return self.root / run.replace(":", "=")

    def done(self, run: str) -> bool:
        return (self.dir(run) / "row.json").is_file()

    def row(self, run: str) -> dict[str, Any]:
        return read_json(self.dir(run) / "row.json")

    def ranks(self, run: str) -> dict[str, np.ndarray]:
        return read_npz(self.dir(run) / "ranks.npz")

    def _write_ranks(self, run: str, ranks: dict[str, np.ndarray]) -> None:
        write_npz(self.dir(run) / "ranks.npz", ranks)

    def fit(self, run: str, build: Callable[[Path], Any], fitted: bool = False,
            with_test: bool = False) -> dict[str, Any]:
        """Build (with its checkpoint folder), fit, save, rank validation (and test, for models
        that involve no choice among runs); or the finished row."""
        if self.done(run):
            row = self.row(run)
            old = row.get("ident") or {}
            diff = sorted(k for k in self.ident.keys() | old.keys() if old.get(k) != self.ident.get(k))
            if diff:
                raise InputError(f"{self.dir(run)} was made with other settings ({', '.join(diff)} "
                                 "differ); give another --out, or delete that run to redo it")
            return row
        from shiftrec.evaluate.ranking import rank_targets

        d = self.dir(run)
        d.mkdir(parents=True, exist_ok=True)
        self.step(f"fit {run}")
        t0 = time.perf_counter()
        m, settings = build(d / "ckpt")
        if not fitted:
            m.fit(self.split)
        fit_s = time.perf_counter() - t0
        m.save(d / "model")
        ranks = {"valid": rank_targets(m, self.split.valid, batch_size=512)}
        if with_test:
            ranks["test"] = rank_targets(m, self.split.test, batch_size=512)
        self._write_ranks(run, ranks)
        row: dict[str, Any] = {"run": run, "ident": self.ident, "settings": settings,
                               "fit_seconds": round(fit_s, 1)}
        res = getattr(m, "result", None)
        if res is not None and getattr(res, "phases", None):
            ph = res.phases[-1]
            row["training"] = {"epochs_run": ph.epochs_run, "best_epoch": ph.best_epoch,
                               "stopped_early": ph.stopped_early,
                               "train_seconds": round(res.seconds, 1)}
        if getattr(m, "selection", None):
            row["fusion_selection"] = m.selection
        write_json(d / "row.json", row)
        if (d / "ckpt").exists():  # the saved model is the result
            shutil.rmtree(d / "ckpt")
        self._cache[run] = m
        return row

    def model(self, run: str) -> Any:
        if run in self._cache:
            return self._cache[run]
        from shiftrec.models.registry import load_model

        if not (self.dir(run) / "model" / "manifest.json").exists():
            raise InputError(f"run '{run}' kept no saved model; delete {self.dir(run)} to redo it")
        return load_model(self.dir(run) / "model")

    def test_ranks(self, run: str) -> np.ndarray:
        r = self.ranks(run)
        if "test" not in r:
            from shiftrec.evaluate.ranking import rank_targets

            self.step(f"test {run}")
            r["test"] = rank_targets(self.model(run), self.split.test, batch_size=512)
            self._write_ranks(run, r)
        return r["test"]


def run_shift_slices(split_dir: str | Path, topics_dir: str | Path, out_dir: str | Path,
                     cfg: ExperimentConfig | None = None, step: Step | None = None,
                     progress: Any = None) -> dict[str, Any]:
    """Run (or resume) the experiment; write OUT/shift_slices.json and return it."""
    from shiftrec.data.splits import SeqSplit
    from shiftrec.evaluate.selection import select_topic_profile
    from shiftrec.evaluate.significance import paired_test
    from shiftrec.interest.slices import shift_slices, slice_summary
    from shiftrec.interest.topics import Topics
    from shiftrec.models import presets

    cfg = cfg or ExperimentConfig()
    step = step or (lambda _s: None)
    out = Path(out_dir)
    split = SeqSplit.load(split_dir)
    if len(split.valid) == 0 or len(split.test) == 0:
        raise InputError(f"split '{split.name}' has {len(split.valid)} validation and "
                         f"{len(split.test)} test users; the experiment needs both", path=split_dir)
    tp = Topics.load(topics_dir)
    it = tp.aligned(split.item_map)
    vmask, tmask = shift_slices(split.valid, it), shift_slices(split.test, it)
    b, seed = cfg.budget, cfg.seed
    ident = {"data_fingerprint": split.meta.get("fingerprint"), "n_items": split.n_items,
             "valid_users": len(split.valid), "test_users": len(split.test),
             "item_topic_sha1": hashlib.sha1(np.ascontiguousarray(it, np.int64).tobytes()).hexdigest()[:16],
             "seed": seed, "budget": vars(b), "sasrec_epochs": cfg.sasrec_epochs,
             "finetune_epochs": cfg.finetune_epochs}
    runs = _Runs(out, split, ident, step)

    def prog(tag: str) -> Any:
        return None if progress is None else (lambda ev: progress(tag, ev))

    # --- SASRec: the baseline and the warm start of every variant
    runs.fit("sasrec", lambda ck: (presets.sasrec(
        cfg.sasrec_epochs, seed, b, **presets.checkpointing(ck), progress=prog("sasrec")),
        {"epochs_cap": cfg.sasrec_epochs}))
    warm = runs.dir("sasrec") / "model"

    def variant(v: str) -> Callable[[Path], Any]:
        return lambda ck: (presets.shiftaware_variant(
            v, it, warm, cfg.finetune_epochs, seed, b, **presets.checkpointing(ck),
            progress=prog(f"shiftaware:{v}")),
            {"variant": v, "overrides": dict(VARIANTS[v]), "epochs_cap": cfg.finetune_epochs})

    for v in cfg.variants:
        runs.fit(f"shiftaware:{v}", variant(v))

    def valid_scores(run: str) -> dict[str, Any]:
        return slice_metrics(runs.ranks(run)["valid"], vmask, KS)

    base_valid = valid_scores("sasrec")
    var_valid = {v: valid_scores(f"shiftaware:{v}") for v in cfg.variants}
    var_scores = {v: slice_scores(m) for v, m in var_valid.items()}
    chosen = select_shift_aware(var_scores, slice_scores(base_valid))
    shift_first = select_shift_first(var_scores)
    ablation = {"selection": SELECTION, "shift_first_selection": SHIFT_FIRST,
                "sasrec_valid": base_valid, "valid_slices": {k: int(m.sum()) for k, m in vmask.items()},
                "variants": {v: {"valid": var_valid[v], "training": runs.row(f"shiftaware:{v}").get("training")}
                             for v in cfg.variants},
                "overrides": {v: dict(VARIANTS[v]) for v in cfg.variants},
                "chosen": chosen.chosen, "qualified": list(chosen.qualified),
                "fell_back": chosen.fell_back, "chosen_shift_first": shift_first.chosen}
    reported = ["sasrec", f"shiftaware:{chosen.chosen}"]
    if "none" in cfg.variants:
        reported.insert(1, "shiftaware:none")

    # --- fusion with the item-level flows, over SASRec and over the chosen variant
    if cfg.fusion:
        from shiftrec.models.fusion import ShiftFusion

        fbases = list(dict.fromkeys(["sasrec", f"shiftaware:{chosen.chosen}"]))
        for fb in fbases:
            runs.fit(f"shiftfusion:{fb}", lambda _ck, fb=fb: (
                ShiftFusion(runs.model(fb), item_topic=it, base_fitted=True), {"base": fb}))
        fus_valid = {f"shiftfusion:{fb}": valid_scores(f"shiftfusion:{fb}") for fb in fbases}
        fsel = select_shift_aware({k: slice_scores(v) for k, v in fus_valid.items()},
                                  slice_scores(base_valid))
        ablation |= {"fusion_valid": {k: slice_scores(v) for k, v in fus_valid.items()},
                     "fusion_chosen": fsel.chosen}
        reported += list(fus_valid)

    # --- cheap baselines
    if cfg.baselines:
        from shiftrec.models.itemknn import ItemKNN
        from shiftrec.models.popularity import Popularity

        def topic_profile(_ck: Path) -> tuple[Any, dict[str, Any]]:
            return select_topic_profile(split, it, tp.names)

        runs.fit("popularity", lambda _ck: (Popularity(), {}), with_test=True)
        runs.fit("topic_profile", topic_profile, fitted=True, with_test=True)
        runs.fit("itemknn", lambda _ck: (ItemKNN(), {}), with_test=True)
        reported = list(BASELINES) + reported

    # --- test: only now, for the reported models
    base_test = runs.test_ranks("sasrec")
    rows, tests = [], {}
    for run in dict.fromkeys(reported):
        tr = runs.test_ranks(run)
        m = slice_metrics(tr, tmask, KS)
        row = runs.row(run)
        rows.append({"model": run, "seed": seed, "settings": row.get("settings"),
                     "training": row.get("training"), "fit_seconds": row.get("fit_seconds"),
                     "valid": valid_scores(run), "test": m,
                     "chosen": run in (f"shiftaware:{chosen.chosen}", ablation.get("fusion_chosen"))})
        if run != "sasrec" and run.startswith(("shiftaware", "shiftfusion")):
            res = {}
            for sl in ("shifted", "stable"):
                res[sl] = paired_test(base_test[tmask[sl]], tr[tmask[sl]], k=10, seed=seed)
                ma, mb = res[sl]["mean_a"], res[sl]["mean_b"]
                res[sl]["relative_change"] = (mb - ma) / ma if ma > 0 else None
            tests[run] = {"a": "sasrec", "b": run, **res}
    result = make_manifest(
        "shift-slices", split=str(split_dir), topics=str(topics_dir), split_name=split.name,
        data_fingerprint=split.meta.get("fingerprint"), n_topics=tp.n_topics,
        test_slices=slice_summary(tmask), config={"variants": list(cfg.variants),
                                                  "sasrec_epochs": cfg.sasrec_epochs,
                                                  "finetune_epochs": cfg.finetune_epochs,
                                                  "seed": seed, "budget": vars(b),
                                                  "baselines": cfg.baselines, "fusion": cfg.fusion},
        ablation=ablation, rows=rows, paired_tests=tests)
    write_json(out / "shift_slices.json", result)
    return result


def headline(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The README's shift-table rows of one setting: label, NDCG@10 shifted / stable / all."""
    ab = result["ablation"]
    out = []
    for r in result["rows"]:
        m = r["model"]
        if m.startswith("shiftaware:"):
            v = m.split(":", 1)[1]
            label = ("ours, no shift signal" if v == "none" else
                     f"ours + shift signals in the transformer ({v})")
            if v == "none" and v == ab["chosen"]:
                label += " (chosen)"
        elif m.startswith("shiftfusion:"):
            label = f"ours + item flows, shift-gated [base {m.split(':', 1)[1]}]"
            label += " (chosen)" if m == ab.get("fusion_chosen") else ""
        else:
            label = m
        t = r["test"]
        out.append({"label": label, "model": m,
                    **{sl: t[sl]["ndcg@10"] for sl in ("shifted", "stable", "all") if sl in t},
                    "n_shifted": t.get("shifted", {}).get("n_users"),
                    "n_stable": t.get("stable", {}).get("n_users")})
    return out
