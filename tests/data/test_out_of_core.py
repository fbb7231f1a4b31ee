"""Out-of-core ingest (`--engine streaming`) equals the in-memory engine on the same input.

Tiny chunks and buckets force what a large input does: several chunks per file, several user
buckets, duplicates split across partitions, a k-core that needs several passes, quarantined
rows in several chunks of one file, ties of (user, time) across files.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from shiftrec.data.clean import CleanConfig, DedupMode
from shiftrec.data.outofcore import Engine, StreamConfig, choose_engine
from shiftrec.data.pipeline import ingest_source
from shiftrec.data.readers import ColumnMap, ReadOptions
from shiftrec.data.readers.generic import list_inputs
from shiftrec.data.schema import open_dataset
from shiftrec.errors import InputError
from shiftrec.manifest import read_json

T0 = datetime(2021, 1, 1, tzinfo=UTC)
TINY = StreamConfig(chunk_rows=5, bucket_rows=6, sample_rows=50, workers=1)
CMAP = ColumnMap(event_type="event_type", value="value", session_id="session_id")


def ts(sec: int) -> datetime:
    return T0 + timedelta(seconds=sec)


def frame(rows: list[tuple]) -> pl.DataFrame:
    """rows of (user, item, second, event_type, value, session)."""
    return pl.DataFrame([{"user_id": u, "item_id": i, "timestamp": ts(t), "event_type": e,
                          "value": v, "session_id": s} for u, i, t, e, v, s in rows],
                        schema={"user_id": pl.String, "item_id": pl.String,
                                "timestamp": pl.Datetime("us", "UTC"), "event_type": pl.String,
                                "value": pl.Float64, "session_id": pl.String})


def chain_rows() -> list[tuple]:
    """A 2-core that needs several passes: dropping u9 (1 event) drops item c below 2, which
    drops u8 below 2, which drops item d, which drops u7; u1..u4 on items a, b stay."""
    r = [(f"u{k}", it, 10 * k + j, "view", 1.0, "s") for k in (1, 2, 3, 4)
         for j, it in enumerate(("a", "b"))]
    r += [("u7", "d", 70, "view", 1.0, "s"), ("u7", "a", 71, "view", 1.0, "s"),
          ("u8", "d", 80, "view", 1.0, "s"), ("u8", "c", 81, "view", 1.0, "s"),
          ("u9", "c", 90, "view", 1.0, "s")]
    return r


def write_partitions(root: Path) -> Path:
    """Three Parquet partitions and one CSV partition in a hive-like layout, and a catalogue."""
    data = root / "events"
    p1 = chain_rows()[:7] + [
        ("dup", "x", 500, "view", 1.0, "first"),  # exact duplicate of a row in part 2 and 3
        ("tie", "a", 600, "view", 1.0, "p1"),  # ties with part 2: file order decides
        ("old", "a", -10**9, "view", 1.0, "s"),  # 1989: timestamp_out_of_range
        ("ghost", "zzz", 700, "view", 1.0, "s"),  # not in the catalogue: unknown_item
        (None, "a", 710, "view", 1.0, "s"),  # missing user: quarantined
    ]
    p2 = chain_rows()[7:] + [
        ("dup", "x", 500, "view", 1.0, "second"),
        ("tie", "b", 600, "view", 1.0, "p2"),
        ("dup", "x", 500, "cart", 1.0, "not-a-dup"),  # another event type: not a duplicate
        ("dup", "x", 501, "view", 1.0, "s"),
        ("u1", "a", 10, "view", 1.0, "s"),  # exact duplicate of u1's first event
    ]
    p3 = [("dup", "x", 500, "view", 1.0, "third"), ("w1", "x", 5, "view", 2.0, "s"),
          ("w1", "a", 6, "purchase", 3.0, "s"), ("w2", "x", 5, "view", 1.0, "s"),
          ("w2", "b", 7, "view", 1.0, "s"), ("w3", "x", 9, "view", 1.0, "s"),
          ("w3", "a", 9, "view", 1.0, "s"), ("", "b", 7, "view", 1.0, "s")]
    for k, rows in enumerate((p1, p2, p3), start=1):
        d = data / f"date=2021-01-0{k}"
        d.mkdir(parents=True)
        frame(rows).write_parquet(d / "part-0.parquet", row_group_size=3)
    d = data / "date=2021-01-04"
    d.mkdir(parents=True)
    # text partition: bad timestamp, unknown event type, non-finite value, in several rows
    (d / "part-0.csv").write_text(
        "user_id,item_id,timestamp,event_type,value,session_id\n"
        "w4,a,2021-01-01T00:00:20Z,view,1,s\n"
        "w4,b,not-a-date,view,1,s\n"
        "w4,x,2021-01-01T00:00:21Z,teleport,1,s\n"
        "w4,b,2021-01-01T00:00:22Z,view,NaN,s\n"
        "w5,a,1609459300,view,1,s\n"
        "w5,x,1609459301,cart,1,s\n"
        ",a,1609459302,view,1,s\n"
        "w5,b,1609459303,purchase,2,s\n")
    (data / "_SUCCESS").write_text("")
    (data / ".hidden.parquet").write_text("not parquet, skipped")
    pl.DataFrame({"item_id": ["a", "b", "c", "d", "x"], "title": list("ABCDX")}).write_csv(
        root / "items.csv")
    return data


def outputs(folder: Path) -> dict:
    ds = open_dataset(folder)  # also verifies the content fingerprint of the manifest
    rep = read_json(folder / "ingest_report.json")
    for k in ("created", "versions", "engine"):
        rep.pop(k, None)
    man = read_json(folder / "manifest.json")
    for k in ("created", "versions"):
        man.pop(k)
    filtered = folder / "filtered.parquet"
    return {"events": ds.events, "items": ds.items, "report": rep, "manifest": man,
            "quarantine": pl.read_parquet(folder / "quarantine.parquet"),
            "filtered": pl.read_parquet(filtered) if filtered.exists() else None}


def assert_same(a: dict, b: dict) -> None:
    assert a["events"].equals(b["events"])
    assert a["items"].equals(b["items"])
    assert a["quarantine"].equals(b["quarantine"])
    assert (a["filtered"] is None) == (b["filtered"] is None)
    if a["filtered"] is not None:
        assert a["filtered"].equals(b["filtered"])
    assert a["report"] == b["report"]
    assert a["manifest"] == b["manifest"]


def run_both(tmp_path: Path, opts: ReadOptions, cfg: CleanConfig, scfg: StreamConfig = TINY
             ) -> tuple[dict, dict, dict]:
    mem_rep = ingest_source("generic", opts, cfg, tmp_path / "mem", "ds", engine="memory")
    st_rep = ingest_source("generic", opts, cfg, tmp_path / "st", "ds", engine="streaming",
                           stream=scfg)
    assert "engine" not in mem_rep and st_rep["engine"]["name"] == "streaming"
    return outputs(tmp_path / "mem"), outputs(tmp_path / "st"), st_rep


def test_list_inputs_folder_and_glob(tmp_path: Path) -> None:
    data = write_partitions(tmp_path)
    files = list_inputs(data)
    assert [f.relative_to(data).as_posix() for f in files] == [
        "date=2021-01-01/part-0.parquet", "date=2021-01-02/part-0.parquet",
        "date=2021-01-03/part-0.parquet", "date=2021-01-04/part-0.csv"]
    assert list_inputs(f"{data}/date=*/*.parquet") == files[:3]
    with pytest.raises(InputError, match="no file matches"):
        list_inputs(f"{data}/nothing-*.parquet")


@pytest.mark.parametrize("kcore", [0, 2])
def test_streaming_equals_memory_on_partitions(tmp_path: Path, kcore: int) -> None:
    data = write_partitions(tmp_path)
    opts = ReadOptions(path=data, items=tmp_path / "items.csv", columns=CMAP)
    cfg = CleanConfig(kcore_user=kcore, kcore_item=kcore, max_time="2030-01-01")
    mem, st, rep = run_both(tmp_path, opts, cfg)
    assert_same(mem, st)
    r = mem["report"]
    assert rep["engine"]["buckets"] >= 3  # the tiny config really splits users into buckets
    assert r["balanced"] and r["quarantined"] == 6  # None user, '' user (csv), 3 bad fields, ''
    fr = r["filtered_by_rule"]
    assert fr["duplicate"] == 3  # 'dup' twice across partitions, u1's event once
    assert fr["timestamp_out_of_range"] == 1 and fr["unknown_item"] == 1
    ev = mem["events"]
    # the first of the exact duplicates (file order) is the one kept
    assert ev.filter((pl.col("user_id") == "dup") & (pl.col("timestamp") == ts(500))
                     & (pl.col("event_type") == "view"))["session_id"].to_list() == ["first"]
    # ties of (user, time) keep the file order across partitions
    assert ev.filter(pl.col("user_id") == "tie")["session_id"].to_list() == ["p1", "p2"] or kcore
    if kcore:
        assert r["kcore_iterations"] >= 3  # u9 -> c -> u8 -> d -> u7 takes several passes
        assert not {"u7", "u8", "u9"} & set(ev["user_id"].to_list())
        assert {"u1", "u2", "u3", "u4"} <= set(ev["user_id"].to_list())
        assert fr["kcore"] > 0
    # the same events as the existing single-file reader on one concatenated file
    one = tmp_path / "one.parquet"
    pl.concat([pl.read_parquet(f) for f in list_inputs(data)[:3]]).write_parquet(one)
    single = ingest_source("generic", replace(opts, path=one), cfg, tmp_path / "one", "ds",
                           engine="memory")
    parq = ingest_source("generic", replace(opts, path=f"{data}/*/*.parquet"), cfg,
                         tmp_path / "glob", "ds", engine="streaming", stream=TINY)
    assert open_dataset(tmp_path / "one").events.equals(open_dataset(tmp_path / "glob").events)
    assert single["filtered_by_rule"] == parq["filtered_by_rule"]
    assert single["kcore_iterations"] == parq["kcore_iterations"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streaming_equals_memory_random(tmp_path: Path, seed: int) -> None:
    """Random logs with many duplicates, ties and a 3-core over many buckets and chunks."""
    rng = np.random.default_rng(seed)
    n = 3000
    data = tmp_path / "parts"
    data.mkdir()
    users = rng.integers(0, 120, n)
    items = (rng.zipf(1.6, n) % 150)
    secs = rng.integers(0, 40, n)  # few distinct times: many ties and exact duplicates
    df = pl.DataFrame({"user_id": [f"u{x}" for x in users], "item_id": [f"i{x}" for x in items],
                       "timestamp": [ts(int(s)) for s in secs],
                       "event_type": rng.choice(["view", "cart", "purchase"], n).tolist(),
                       "value": rng.integers(0, 2, n).astype(float),
                       "session_id": [str(k) for k in range(n)]})
    for k in range(7):
        df[k::7].write_parquet(data / f"part-{k}.parquet", row_group_size=100)
    opts = ReadOptions(path=data, columns=CMAP)
    cfg = CleanConfig(kcore_user=3, kcore_item=3, bot_max_events_per_minute=60,
                      max_time="2030-01-01")
    mem, st, rep = run_both(tmp_path, opts, cfg, StreamConfig(chunk_rows=97, bucket_rows=250,
                                                              sample_rows=500, workers=1))
    assert rep["engine"]["buckets"] >= 5
    assert mem["report"]["filtered_by_rule"]["duplicate"] > 0
    assert mem["report"]["kcore_iterations"] >= 2
    assert_same(mem, st)


def test_user_item_dedup_and_no_filtered_rows(tmp_path: Path) -> None:
    data = write_partitions(tmp_path)
    opts = ReadOptions(path=data, columns=CMAP)
    cfg = CleanConfig(dedup=DedupMode.USER_ITEM, keep_filtered_rows=False, kcore_user=2,
                      max_time="2030-01-01")
    mem, st, _ = run_both(tmp_path, opts, cfg)
    assert mem["filtered"] is None
    assert_same(mem, st)


def test_worker_processes_give_the_same_result(tmp_path: Path) -> None:
    """The default runner spreads the file and bucket tasks over local processes."""
    data = write_partitions(tmp_path)
    opts = ReadOptions(path=data, items=tmp_path / "items.csv", columns=CMAP)
    cfg = CleanConfig(kcore_user=2, kcore_item=2, max_time="2030-01-01")
    mem, st, rep = run_both(tmp_path, opts, cfg, replace(TINY, workers=2))
    assert rep["engine"]["workers"] == 2 and rep["engine"]["task_processes"] == 2
    assert_same(mem, st)
    bad = tmp_path / "bad"
    bad.mkdir()
    frame([(None, "b", k, "view", 1.0, "s") for k in range(3)]).write_parquet(bad / "p.parquet")
    with pytest.raises(InputError, match="3 of 3 rows bad"):
        ingest_source("generic", replace(opts, path=bad), cfg, tmp_path / "x", "ds",
                      engine="streaming", stream=replace(TINY, workers=2))


def test_too_many_bad_rows_is_the_same_error(tmp_path: Path) -> None:
    """A file that is mostly bad only over all its chunks is refused like the whole file is."""
    data = tmp_path / "bad"
    data.mkdir()
    good = [("u", f"i{k}", k, "view", 1.0, "s") for k in range(4)]
    bad = [(None, f"b{k}", k, "view", 1.0, "s") for k in range(6)]
    frame(good + bad).write_parquet(data / "p.parquet", row_group_size=2)
    opts = ReadOptions(path=data, columns=CMAP)
    errs = []
    for engine in ("memory", "streaming"):
        with pytest.raises(InputError) as e:
            ingest_source("generic", opts, CleanConfig(), tmp_path / engine, "ds", engine=engine,
                          stream=TINY)
        errs.append(str(e.value))
    assert errs[0] == errs[1] and "6 of 10 rows bad" in errs[0]
    assert not list(tmp_path.glob(".*spill*"))  # the spill folder is removed on error


def test_engine_choice_and_refusals(tmp_path: Path) -> None:
    data = write_partitions(tmp_path)
    assert choose_engine("auto", list_inputs(data)) == Engine.MEMORY
    assert choose_engine("streaming", list_inputs(data)) == Engine.STREAMING
    from shiftrec.errors import ConfigError

    with pytest.raises(ConfigError, match="generic format only"):
        ingest_source("amazon-csv", ReadOptions(path=data), CleanConfig(), tmp_path / "o", "x",
                      engine="streaming")
    with pytest.raises(ConfigError, match="--engine must be one of"):
        ingest_source("generic", ReadOptions(path=data), CleanConfig(), tmp_path / "o", "x",
                      engine="warp")
    with pytest.raises(ConfigError):  # the reader's own option check still applies
        ingest_source("generic", ReadOptions(path=data, domain="x"), CleanConfig(), tmp_path / "o",
                      "x", engine="streaming")


def test_cli_streaming_glob(tmp_path: Path, capsys: pytest.CaptureFixture,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    from shiftrec.cli.app import main

    data = write_partitions(tmp_path)
    for engine, out in (("streaming", "st"), ("memory", "mem")):
        monkeypatch.setattr(sys, "argv", [
            "shiftrec", "ingest", "generic", f"{data}/date=*/*", "--engine", engine, "-o",
            str(tmp_path / out), "--map", "event_type=event_type", "--map", "value=value",
            "--map", "session_id=session_id", "--items", str(tmp_path / "items.csv"),
            "--kcore", "2"])
        try:
            main()
        except SystemExit as e:
            assert not e.code, capsys.readouterr().err
        assert "balanced" in capsys.readouterr().out
    assert_same(outputs(tmp_path / "mem"), outputs(tmp_path / "st"))
    assert read_json(tmp_path / "st" / "ingest_report.json")["name"] == "events"


@pytest.mark.slow  # starting a local Ray cluster takes about half a minute on a shared 2-core box
def test_ray_engine_equals_memory(tmp_path: Path) -> None:
    """`--engine ray` on a real local Ray cluster with 2 CPUs (tasks in worker processes): the
    same dataset folder as the in-memory engine, errors raised the same way."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=150 * 2**20,
             log_to_driver=False)
    try:
        data = write_partitions(tmp_path)
        opts = ReadOptions(path=data, items=tmp_path / "items.csv", columns=CMAP)
        cfg = CleanConfig(kcore_user=2, kcore_item=2, max_time="2030-01-01")
        ingest_source("generic", opts, cfg, tmp_path / "mem", "ds", engine="memory")
        rep = ingest_source("generic", opts, cfg, tmp_path / "ray", "ds", engine="ray", stream=TINY)
        assert rep["engine"]["name"] == "ray" and rep["engine"]["buckets"] >= 3
        assert_same(outputs(tmp_path / "mem"), outputs(tmp_path / "ray"))
        rep = read_json(tmp_path / "ray" / "ingest_report.json")
        assert rep["engine"]["task_processes"] >= 2  # tasks ran in Ray worker processes
        assert rep["engine"]["workers"] == 2  # the cluster's CPUs (1 CPU a task), not 1
        bad = tmp_path / "bad"
        bad.mkdir()
        frame([(None, "b", k, "view", 1.0, "s") for k in range(3)]).write_parquet(bad / "p.parquet")
        with pytest.raises(InputError, match="3 of 3 rows bad"):
            ingest_source("generic", replace(opts, path=bad), cfg, tmp_path / "x", "ds",
                          engine="ray", stream=TINY)
    finally:
        ray.shutdown()


def test_ray_address_refused_at_once(tmp_path: Path) -> None:
    """A malformed or unreachable --address is one ConfigError line, not a Ray timeout."""
    pytest.importorskip("ray")
    import ray

    from shiftrec.errors import ConfigError

    if ray.is_initialized():
        pytest.skip("a Ray connection is already open in this process")
    data = write_partitions(tmp_path)
    for address, msg in (("127.0.0.1:1", "cannot reach the Ray cluster at 127.0.0.1:1"),
                         ("nonsense", "--address must be")):
        with pytest.raises(ConfigError, match=msg):
            ingest_source("generic", ReadOptions(path=data), CleanConfig(), tmp_path / "o", "x",
                          engine="ray", address=address)
    with pytest.raises(ConfigError, match="--address applies to --engine ray only"):
        ingest_source("generic", ReadOptions(path=data), CleanConfig(), tmp_path / "o", "x",
                      engine="streaming", address="auto")
