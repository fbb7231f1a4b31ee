"""Top-down orchestration of ingest (read -> clean -> write) and prepare (split -> write)."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any

from shiftrec.data.clean import CleanConfig, clean, write_outputs
from shiftrec.data.readers import ReadResult
from shiftrec.data.schema import Dataset, open_dataset
from shiftrec.data.splits import SeqSplit, cross_domain, leave_one_out, temporal
from shiftrec.errors import ArtifactError
from shiftrec.manifest import atomic_dir


class SplitKind(enum.StrEnum):
    LEAVE_ONE_OUT = "loo"
    TEMPORAL = "temporal"
    CROSS_DOMAIN = "cross-domain"


def ingest(read: ReadResult, cfg: CleanConfig, out_dir: str | Path, name: str) -> dict[str, Any]:
    check_output_path(out_dir)
    ds, report, filtered_rows = clean(read, cfg, name)
    write_outputs(out_dir, ds, report, read, filtered_rows)
    return report


def ingest_source(fmt: str, opts: Any, cfg: CleanConfig, out_dir: str | Path, name: str,
                  engine: str = "auto", stream: Any = None, address: str | None = None
                  ) -> dict[str, Any]:
    """Read format `fmt` with `opts` (a `ReadOptions`) and ingest it with an engine (`Engine`):
    memory reads everything then cleans; streaming (generic format only: a file, a folder of
    partitions or a glob) works out of core with the same result; ray runs the streaming
    engine's per-file and per-bucket tasks on a Ray cluster (`address`; None: local or
    RAY_ADDRESS); auto streams inputs above `outofcore.AUTO_STREAMING_ROWS` rows."""
    from shiftrec.data.outofcore import Engine, RayRunner, choose_engine, ingest_streaming
    from shiftrec.data.readers import read as read_format
    from shiftrec.data.readers.generic import list_inputs
    from shiftrec.errors import ConfigError

    try:
        eng = Engine(engine)
    except ValueError:
        raise ConfigError(f"--engine must be one of {[e.value for e in Engine]}") from None
    check_output_path(out_dir)
    if fmt == "generic":
        eng = choose_engine(eng, list_inputs(opts.path), opts.file_format)
    elif eng in (Engine.STREAMING, Engine.RAY):
        raise ConfigError(f"--engine {eng.value} reads the generic format only, not '{fmt}'")
    if address is not None and eng != Engine.RAY:
        raise ConfigError("--address applies to --engine ray only")
    if eng in (Engine.STREAMING, Engine.RAY):
        from shiftrec.data.readers import READERS, check_options

        check_options(fmt, READERS[fmt], opts)
        runner = RayRunner(address) if eng == Engine.RAY else None
        return ingest_streaming(opts, cfg, out_dir, name, stream, runner)
    return ingest(read_format(fmt, opts), cfg, out_dir, name)


def prepare(dataset_dir: str | Path | Dataset, out_dir: str | Path, kind: SplitKind = SplitKind.LEAVE_ONE_OUT,
            max_len: int = 50, test_start: float | None = None, valid_start: float | None = None,
            sources: list[str] | None = None, target: str | None = None) -> dict[str, SeqSplit]:
    """Split a dataset folder (or a Dataset already read, e.g. a named one) into `out_dir`."""
    check_output_path(out_dir)
    ds = dataset_dir if isinstance(dataset_dir, Dataset) else open_dataset(dataset_dir)
    out = Path(out_dir)
    if kind == SplitKind.LEAVE_ONE_OUT:
        splits = {"": leave_one_out(ds, max_len)}
    elif kind == SplitKind.TEMPORAL:
        splits = {"": temporal(ds, test_start, valid_start, max_len)}
    else:
        from shiftrec.errors import ConfigError

        if not target:
            raise ConfigError("cross-domain split needs --target (and --source)")
        src, tgt = cross_domain(ds, sources or [d for d in ds.domains if d != target], target, max_len)
        splits = {f"source-{k}": v for k, v in src.items()} | {f"target-{target}": tgt}
    extra = {"dataset": ds.name if isinstance(dataset_dir, Dataset) else str(Path(dataset_dir).resolve()),
             "data_fingerprint": ds.fingerprint()}
    if "" in splits:
        splits[""].save(out, manifest_extra=extra)
    else:  # one folder holding a complete split folder per domain, itself written atomically
        with atomic_dir(out) as tmp:
            for sub, sp in splits.items():
                sp.save(tmp / sub, manifest_extra=extra)
    return splits


def check_output_path(out_dir: str | Path) -> Path:
    """Refuse early, with one line, an output folder that cannot be written: below a regular
    file, or in a folder without write permission (so nothing is read or computed in vain)."""
    import os

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ArtifactError("output path exists and is not a folder", path=out)
    anc = out.parent
    while not anc.exists():
        anc = anc.parent
    if not anc.is_dir():
        raise ArtifactError(f"cannot create the output folder: {anc} is a regular file", path=out)
    if not os.access(anc, os.W_OK | os.X_OK):
        raise ArtifactError(f"cannot create the output folder: no write permission in {anc}", path=out)
    return out
