"""A malformed-file corpus: reader x fault, generated in tmp_path, run through `shiftrec ingest`.

Every case ends in one of two ways, and both are checked:
- exit code 2 with ONE line on stderr (`error: ...`) naming the file (and the row / column where
  one applies), nothing on stdout, no traceback, no internal column name (`__row`);
- success, with the bad rows quarantined (or filtered by a counted rule), the accounting identity
  rows_in = accepted + quarantined + filtered holds, and every good row is kept ("no good row
  lost"): good rows carry item ids (or user ids) starting with 'g', bad ones 'b'.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest

T0 = 1_609_459_200  # 2021-01-01T00:00:00Z
N_GOOD = 6


@dataclass
class Case:
    id: str
    fmt: str
    files: dict[str, bytes]
    path: str  # PATH argument, relative to the case folder
    args: list[str] = field(default_factory=list)
    quarantined: int | None = None  # expected quarantined rows (success cases)
    error: list[str] | None = None  # substrings of the one error line (error cases)
    key: str = "item_id"  # column whose 'g...' values are the good rows
    good: set[str] = field(default_factory=lambda: {f"g{k}" for k in range(N_GOOD)})
    skip: str | None = None


def lines(*rows: str) -> bytes:
    return ("\n".join(rows) + "\n").encode()


def iso(k: int) -> str:
    return f"2021-01-0{k + 1}T00:00:00Z"


# ------------------------------------------------------------------------------------ generic

CSV_HEAD = "user_id,item_id,timestamp,value"
CSV_GOOD = [f"u{k},g{k},{iso(k)},1.0" for k in range(N_GOOD)]
CSV_ARGS = ["--map", "value=value"]


def csv_with(bad: bytes | str, head: str = CSV_HEAD) -> bytes:
    b = bad.encode() if isinstance(bad, str) else bad
    good = [g.encode() for g in CSV_GOOD]
    return b"\n".join([head.encode(), *good[:3], b, *good[3:]]) + b"\n"


def generic_csv_cases() -> list[Case]:
    faults = {
        "ts-nan": "ub,b1,NaN,1.0", "ts-inf": "ub,b1,inf,1.0", "ts-neg-inf": "ub,b1,-inf,1.0",
        "ts-1e20": "ub,b1,1e20,1.0", "ts-1e309": "ub,b1,1e309,1.0", "ts-garbage": "ub,b1,soon,1.0",
        "value-nan": "ub,b1,2021-01-02,NaN", "value-inf": "ub,b1,2021-01-02,inf",
        "value-1e309": "ub,b1,2021-01-02,1e309", "value-text": "ub,b1,2021-01-02,many",
        "ragged-long": "ub,b1,2021-01-02,1.0,extra", "ragged-short": "ub,b1",
        "missing-user": ",b1,2021-01-02,1.0", "missing-item": "ub,,2021-01-02,1.0",
        "missing-ts": "ub,b1,,1.0", "blank-user": "  ,b1,2021-01-02,1.0",
    }
    out = [Case(f"generic-csv-{n}", "generic", {"ev.csv": csv_with(b)}, "ev.csv", CSV_ARGS, 1)
           for n, b in faults.items()]
    out.append(Case("generic-csv-invalid-utf8", "generic",
                    {"ev.csv": csv_with(b"u\xff\xfeb,b1,2021-01-02,1.0")}, "ev.csv", CSV_ARGS, 1))
    out.append(Case("generic-csv-bom", "generic", {"ev.csv": b"\xef\xbb\xbf" + csv_with("u9,g9,2021-01-02,1.0")},
                    "ev.csv", CSV_ARGS, 0, good={f"g{k}" for k in (*range(N_GOOD), 9)}))
    out.append(Case("generic-csv-two-faults", "generic",
                    {"ev.csv": csv_with("ub,b1,NaN,1.0\nub,b2,2021-01-02,1.0,x")}, "ev.csv", CSV_ARGS, 2))
    out.append(Case("generic-tsv-ragged", "generic",
                    {"ev.tsv": csv_with("ub\tb1\t2021-01-02\t1\t2", CSV_HEAD.replace(",", "\t"))
                     .replace(b",", b"\t")}, "ev.tsv", CSV_ARGS, 1))
    gz = gzip.compress(csv_with("ub,b1,NaN,1.0") * 1)
    out.append(Case("generic-csv-gz-ok", "generic", {"ev.csv.gz": gz}, "ev.csv.gz", CSV_ARGS, 1))
    big = gzip.compress(b"\n".join([CSV_HEAD.encode()] + [f"u{k},g{k},{iso(k % 9)},1".encode()
                                                          for k in range(5000)]))
    out.append(Case("generic-csv-gz-truncated", "generic", {"ev.csv.gz": big[:len(big) // 2]},
                    "ev.csv.gz", CSV_ARGS, error=["ev.csv.gz", "gzip"]))
    out.append(Case("generic-csv-header-only", "generic", {"ev.csv": lines(CSV_HEAD)}, "ev.csv",
                    CSV_ARGS, error=["ev.csv", "no rows"]))
    out.append(Case("generic-csv-all-ts-bad", "generic",
                    {"ev.csv": lines(CSV_HEAD, "u,b1,NaN,1", "u,b2,inf,1")}, "ev.csv", CSV_ARGS,
                    error=["ev.csv", "row 1", "column 'timestamp'"]))
    out.append(Case("generic-csv-missing-column", "generic", {"ev.csv": lines("user_id,item_id", "u,g")},
                    "ev.csv", error=["ev.csv", "column 'timestamp'"]))
    return out


def jsonl(rows: list[str]) -> bytes:
    return "\n".join(rows).encode() + b"\n"


JS_GOOD = [json.dumps({"user_id": f"u{k}", "item_id": f"g{k}", "timestamp": T0 + k, "value": 1.0})
           for k in range(N_GOOD)]


def js_with(bad: str | bytes) -> bytes:
    b = bad.encode() if isinstance(bad, str) else bad
    good = [g.encode() for g in JS_GOOD]
    return b"\n".join([*good[:3], b, *good[3:]]) + b"\n"


def generic_jsonl_cases() -> list[Case]:
    faults = {
        "ts-nan": '{"user_id":"ub","item_id":"b1","timestamp":NaN,"value":1}',
        "ts-inf": '{"user_id":"ub","item_id":"b1","timestamp":Infinity,"value":1}',
        "ts-1e20": '{"user_id":"ub","item_id":"b1","timestamp":1e20,"value":1}',
        "ts-1e309": '{"user_id":"ub","item_id":"b1","timestamp":1e309,"value":1}',
        "value-nan": '{"user_id":"ub","item_id":"b1","timestamp":1609459300,"value":NaN}',
        "value-1e309": '{"user_id":"ub","item_id":"b1","timestamp":1609459300,"value":1e309}',
        "missing-user": '{"item_id":"b1","timestamp":1609459300,"value":1}',
        "null-item": '{"user_id":"ub","item_id":null,"timestamp":1609459300,"value":1}',
        "malformed": '{"user_id":"ub", oops',
        "not-object": "[1, 2, 3]",
    }
    out = [Case(f"generic-jsonl-{n}", "generic", {"ev.jsonl": js_with(b)}, "ev.jsonl", CSV_ARGS, 1)
           for n, b in faults.items()]
    out.append(Case("generic-jsonl-invalid-utf8", "generic",
                    {"ev.jsonl": js_with(b'{"user_id":"u\xff","item_id":"b1","timestamp":1609459300}')},
                    "ev.jsonl", CSV_ARGS, 1))
    out.append(Case("generic-jsonl-bom", "generic", {"ev.jsonl": b"\xef\xbb\xbf" + jsonl(JS_GOOD)},
                    "ev.jsonl", CSV_ARGS, 0))
    full = gzip.compress(jsonl(JS_GOOD * 500))
    out.append(Case("generic-jsonl-gz-truncated", "generic", {"ev.jsonl.gz": full[:len(full) // 3]},
                    "ev.jsonl.gz", CSV_ARGS, error=["ev.jsonl.gz", "gzip"]))
    return out


def parquet_bytes(df: pl.DataFrame) -> bytes:
    import io

    buf = io.BytesIO()
    df.write_parquet(buf)
    return buf.getvalue()


def generic_parquet_cases() -> list[Case]:
    def frame(ts: float, value: float) -> bytes:
        return parquet_bytes(pl.DataFrame({
            "user_id": [f"u{k}" for k in range(N_GOOD)] + ["ub"],
            "item_id": [f"g{k}" for k in range(N_GOOD)] + ["b1"],
            "timestamp": [float(T0 + k) for k in range(N_GOOD)] + [ts],
            "value": [1.0] * N_GOOD + [value]}))

    out = []
    for n, (ts, v) in {"ts-nan": (float("nan"), 1.0), "ts-inf": (float("inf"), 1.0),
                       "ts-1e20": (1e20, 1.0), "value-nan": (T0 + 9.0, float("nan")),
                       "value-inf": (T0 + 9.0, float("inf"))}.items():
        out.append(Case(f"generic-parquet-{n}", "generic", {"ev.parquet": frame(ts, v)}, "ev.parquet",
                        CSV_ARGS, 1))
    out.append(Case("generic-parquet-garbage", "generic", {"ev.parquet": b"not parquet at all"},
                    "ev.parquet", error=["ev.parquet", "Parquet"]))
    return out


def mapping_cases() -> list[Case]:
    ev = {"ev.csv": lines(*([CSV_HEAD] + CSV_GOOD))}
    return [
        Case("mapping-invalid-yaml", "generic", {**ev, "map.yaml": b"user_id: [unclosed\nitem_id: x\n"},
             "ev.csv", ["--mapping", "{dir}/map.yaml"], error=["map.yaml", "invalid YAML", "row"]),
        Case("mapping-not-a-mapping", "generic", {**ev, "map.yaml": b"- a\n- b\n"}, "ev.csv",
             ["--mapping", "{dir}/map.yaml"], error=["map.yaml", "mapping"]),
        Case("mapping-unknown-field-yaml", "generic", {**ev, "map.yaml": b"usr: user_id\n"}, "ev.csv",
             ["--mapping", "{dir}/map.yaml"], error=["map.yaml", "unknown mapping field 'usr'"]),
        Case("mapping-unknown-field-flag", "generic", ev, "ev.csv", ["--map", "usr=user_id"],
             error=["ev.csv", "unknown mapping field 'usr'"]),
        Case("mapping-bad-column", "generic", ev, "ev.csv", ["--map", "user_id=visitor"],
             error=["ev.csv", "column 'visitor'"]),
        Case("option-not-for-format", "generic", ev, "ev.csv", ["--recipe", "unisrec"],
             error=["--recipe does not apply", "generic"]),
        Case("out-below-regular-file", "generic", {**ev, "file": b"x"}, "ev.csv",
             ["-o", "{dir}/file/ds"], error=["file/ds", "regular file"]),
        Case("out-unwritable", "generic", ev, "ev.csv", ["-o", "{dir}/ro/ds"],
             error=["ro/ds", "permission"],
             skip="root ignores permissions" if hasattr(os, "geteuid") and os.geteuid() == 0 else None),
    ]


# ---------------------------------------------------------------------------- amazon-csv

AC_HEAD = "user_id,item_id,timestamp"
AC_GOOD = [f"u{k},g{k},{T0 + 86400 * k}" for k in range(N_GOOD)]


def amazon_csv_cases() -> list[Case]:
    def folder(bad: bytes | str) -> dict[str, bytes]:
        b = bad.encode() if isinstance(bad, str) else bad
        good = [g.encode() for g in AC_GOOD]
        return {"beauty/interactions.csv": b"\n".join([AC_HEAD.encode(), *good[:2], b, *good[2:]]) + b"\n"}

    faults = {"ts-nan": "ub,b1,NaN", "ts-inf": "ub,b1,inf", "ts-1e20": "ub,b1,1e20",
              "ts-1e309": "ub,b1,1e309", "ragged-long": "ub,b1,1609459300,9",
              "ragged-short": "ub,b1", "missing-item": "ub,,1609459300"}
    out = [Case(f"amazon-csv-{n}", "amazon-csv", folder(b), "beauty", ["--dedup", "none"], 1)
           for n, b in faults.items()]
    out.append(Case("amazon-csv-invalid-utf8", "amazon-csv", folder(b"ub,b\xff1,1609459300"), "beauty",
                    ["--dedup", "none"], 1))
    items = b"item_id,title\n" + b"".join(f"g{k},t{k}\n".encode() for k in range(N_GOOD)) + b"gx,a,b,c\n"
    out.append(Case("amazon-csv-items-ragged", "amazon-csv",
                    {**folder("ub,b1,NaN"), "beauty/items.csv": items}, "beauty", ["--dedup", "none"], 1))
    out.append(Case("amazon-csv-no-interactions", "amazon-csv", {"beauty/x.txt": b"x"}, "beauty",
                    error=["beauty", "interactions.csv"]))
    return out


# --------------------------------------------------------------------------- amazon-2018

def review(u: str, i: str, ts: str = "1609459300", overall: str = "5.0") -> str:
    return f'{{"reviewerID":"{u}","asin":"{i}","overall":{overall},"unixReviewTime":{ts}}}'


AZ_GOOD = [review(f"u{k}", f"g{k}", str(T0 + k)) for k in range(N_GOOD)]


def amazon_2018_cases() -> list[Case]:
    def f(bad: str | bytes) -> dict[str, bytes]:
        b = bad.encode() if isinstance(bad, str) else bad
        good = [g.encode() for g in AZ_GOOD]
        return {"Test_5.json": b"\n".join([*good[:3], b, *good[3:]]) + b"\n"}

    faults = {"ts-nan": review("ub", "b1", "NaN"), "ts-inf": review("ub", "b1", "Infinity"),
              "ts-neg-inf": review("ub", "b1", "-Infinity"), "ts-1e20": review("ub", "b1", "1e20"),
              "ts-1e309": review("ub", "b1", "1e309"), "ts-text": review("ub", "b1", '"later"'),
              "overall-nan": review("ub", "b1", overall="NaN"),
              "overall-1e309": review("ub", "b1", overall="1e309"),
              "missing-asin": '{"reviewerID":"ub","unixReviewTime":1609459300}',
              "malformed": '{"reviewerID": oops'}
    out = [Case(f"amazon-2018-{n}", "amazon-2018", f(b), "Test_5.json", ["--dedup", "none"], 1)
           for n, b in faults.items()]
    out.append(Case("amazon-2018-invalid-utf8", "amazon-2018", f(review("u\xff", "b1").encode("latin-1")),
                    "Test_5.json", ["--dedup", "none"], 1))
    out.append(Case("amazon-2018-bom", "amazon-2018",
                    {"Test_5.json": b"\xef\xbb\xbf" + jsonl(AZ_GOOD)}, "Test_5.json", ["--dedup", "none"], 0))
    full = gzip.compress(jsonl(AZ_GOOD * 400))
    out.append(Case("amazon-2018-gz-truncated", "amazon-2018", {"Test_5.json.gz": full[:len(full) // 2]},
                    "Test_5.json.gz", error=["Test_5.json.gz", "gzip"]))
    return out


# -------------------------------------------------------------------------------- recbole

RB_HEAD = "user_id:token\titem_id:token\ttimestamp:float\trating:float"
RB_GOOD = [f"u{k}\tg{k}\t{T0 + k}\t4" for k in range(N_GOOD)]


def recbole_cases() -> list[Case]:
    def f(bad: str | bytes) -> dict[str, bytes]:
        b = bad.encode() if isinstance(bad, str) else bad
        good = [g.encode() for g in RB_GOOD]
        return {"toy.inter": b"\n".join([RB_HEAD.encode(), *good[:3], b, *good[3:]]) + b"\n"}

    faults = {"ts-nan": "ub\tb1\tnan\t4", "ts-inf": "ub\tb1\tinf\t4", "ts-1e20": "ub\tb1\t1e20\t4",
              "ts-1e309": "ub\tb1\t1e309\t4", "rating-nan": "ub\tb1\t1609459300\tnan",
              "rating-inf": "ub\tb1\t1609459300\tinf", "ragged-long": "ub\tb1\t1609459300\t4\t7",
              "ragged-short": "ub\tb1", "missing-user": "\tb1\t1609459300\t4"}
    out = [Case(f"recbole-{n}", "recbole", f(b), "toy.inter", ["--dedup", "none"], 1)
           for n, b in faults.items()]
    out.append(Case("recbole-invalid-utf8", "recbole", f(b"ub\tb\xff1\t1609459300\t4"), "toy.inter",
                    ["--dedup", "none"], 1))
    out.append(Case("recbole-header-only", "recbole", {"toy.inter": lines(RB_HEAD)}, "toy.inter",
                    error=["toy.inter", "no rows"]))
    out.append(Case("recbole-bad-header", "recbole", {"toy.inter": lines("user_id\titem_id", "u\ti")},
                    "toy.inter", error=["toy.inter", "name:type"]))
    return out


# -------------------------------------------------------------------------------- unisrec

US_HEAD = "user_id:token\titem_id_list:token_seq\titem_id:token"


def unisrec_files(bad: dict[str, tuple[int, str]] | None = None, drop: str | None = None,
                  header_only: str | None = None) -> dict[str, bytes]:
    """5 users (index 1..5), each with the 5-item sequence u, u+1, ..., u+4 (items 1..9).
    User 5 is named 'b5' (the one a fault targets); the others 'g1'..'g4'."""
    bad = bad or {}
    users = {u: ("b5" if u == 5 else f"g{u}") for u in range(1, 6)}
    seqs = {u: [u + j for j in range(5)] for u in users}
    files: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    for u, s in seqs.items():
        files["train"] += [f"{u}\t{s[0]} {s[1]}\t{s[2]}", f"{u}\t{s[0]}\t{s[1]}"]  # longest first
        files["valid"].append(f"{u}\t{' '.join(map(str, s[:3]))}\t{s[3]}")
        files["test"].append(f"{u}\t{' '.join(map(str, s[:4]))}\t{s[4]}")
    for split, (row, text) in bad.items():
        files[split][row] = text
    out = {f"Toy.{k}.inter": (lines(US_HEAD) if k == header_only else lines(US_HEAD, *v))
           for k, v in files.items()}
    out["Toy.item2index"] = lines(*[f"asin{i}\t{i}" for i in range(1, 10)])
    out["Toy.user2index"] = lines(*[f"{n}\t{u}" for u, n in users.items()])
    out["Toy.text"] = lines("item_id:token\ttext:token_seq", *[f"asin{i}\ttitle {i}" for i in range(1, 10)])
    if drop:
        del out[drop]
    return {f"toy/{k}": v for k, v in out.items()}


def unisrec_cases() -> list[Case]:
    good = {f"g{u}" for u in range(1, 5)}
    kw = {"key": "user_id", "good": good, "args": ["--dedup", "none"]}
    return [
        Case("unisrec-clean", "unisrec", unisrec_files(), "toy", quarantined=0, key="user_id",
             good=good | {"b5"}, args=["--dedup", "none"]),
        Case("unisrec-non-integer-in-list", "unisrec", unisrec_files({"train": (8, "5\t5 x\t7")}), "toy",
             quarantined=1, **kw),
        Case("unisrec-float-in-list", "unisrec", unisrec_files({"valid": (4, "5\t5 6.5 7\t8")}), "toy",
             quarantined=1, **kw),
        Case("unisrec-unknown-item-index", "unisrec", unisrec_files({"test": (4, "5\t5 6 7 8\t99")}), "toy",
             quarantined=1, **kw),
        Case("unisrec-ragged", "unisrec", unisrec_files({"test": (4, "5\t5 6 7 8\t9\textra")}), "toy",
             quarantined=1, **kw),
        Case("unisrec-missing-item2index", "unisrec", unisrec_files(drop="Toy.item2index"), "toy",
             error=["Toy.item2index", "not found"]),
        Case("unisrec-missing-user2index", "unisrec", unisrec_files(drop="Toy.user2index"), "toy",
             error=["Toy.user2index", "not found"]),
        Case("unisrec-header-only", "unisrec", unisrec_files(header_only="valid"), "toy",
             error=["Toy.valid.inter", "no rows"]),
    ]


# -------------------------------------------------------------------------- online-retail

OR_HEAD = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"
OR_GOOD = [f"5{k},g{k},thing {k},1,2011-01-0{k + 1} 10:00:00,1.5,1234{k},UK" for k in range(N_GOOD)]


def online_retail_cases() -> list[Case]:
    def f(bad: str | bytes) -> dict[str, bytes]:
        b = bad.encode() if isinstance(bad, str) else bad
        good = [g.encode() for g in OR_GOOD]
        return {"or.csv": b"\n".join([OR_HEAD.encode(), *good[:3], b, *good[3:]]) + b"\n"}

    bad_row = "59,b1,bad,{q},{d},{p},12349,UK"
    faults = {
        "quantity-nan": bad_row.format(q="NaN", d="2011-01-02 10:00:00", p="1"),
        "quantity-inf": bad_row.format(q="inf", d="2011-01-02 10:00:00", p="1"),
        "quantity-1e309": bad_row.format(q="1e309", d="2011-01-02 10:00:00", p="1"),
        "price-nan": bad_row.format(q="1", d="2011-01-02 10:00:00", p="NaN"),
        "price-1e309": bad_row.format(q="1", d="2011-01-02 10:00:00", p="1e309"),
        "date-nan": bad_row.format(q="1", d="NaN", p="1"),
        "date-1e20": bad_row.format(q="1", d="1e20", p="1"),
        "ragged-long": bad_row.format(q="1", d="2011-01-02 10:00:00", p="1") + ",extra",
        "ragged-short": "59,b1,bad",
        "missing-stock": "59,,bad,1,2011-01-02 10:00:00,1,12349,UK",
    }
    out = [Case(f"online-retail-{n}", "online-retail", f(b), "or.csv", ["--recipe", "unisrec", "--dedup", "none"], 1)
           for n, b in faults.items()]
    out.append(Case("online-retail-invalid-utf8", "online-retail",
                    f(b"59,b1,caf\xe9,1,2011-01-02 10:00:00,1,12349,UK"), "or.csv",
                    ["--recipe", "unisrec", "--dedup", "none"], 1))
    out.append(Case("online-retail-unknown-recipe", "online-retail", f(OR_GOOD[0]), "or.csv",
                    ["--recipe", "nope"], error=["recipe", "unisrec"]))
    return out


CASES = (generic_csv_cases() + generic_jsonl_cases() + generic_parquet_cases() + mapping_cases()
         + amazon_csv_cases() + amazon_2018_cases() + recbole_cases() + unisrec_cases()
         + online_retail_cases())


def run_cli(argv: list[str], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
            ) -> tuple[int, str, str]:
    """`shiftrec ARGV` in this process through the real entry point (cli.app.main): any
    exception other than SystemExit escapes, i.e. a traceback fails the test."""
    from shiftrec.cli.app import main

    monkeypatch.setattr(sys, "argv", ["shiftrec", *argv])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def materialise(case: Case, root: Path) -> Path:
    for name, data in case.files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    if case.id == "out-unwritable":
        (root / "ro").mkdir()
        (root / "ro").chmod(0o500)
    return root


def test_corpus_is_large_and_covers_every_reader() -> None:
    assert len(CASES) >= 90
    assert {c.fmt for c in CASES} == {"generic", "amazon-csv", "amazon-2018", "recbole", "unisrec",
                                      "online-retail"}
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_input(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    if case.skip:
        pytest.skip(case.skip)
    root = materialise(case, tmp_path / "in")
    out = tmp_path / "out"
    args = [a.replace("{dir}", str(root)) for a in case.args]
    if "-o" not in args:
        args += ["-o", str(out)]
    code, stdout, stderr = run_cli(["ingest", case.fmt, str(root / case.path), *args], capsys, monkeypatch)
    if case.error is not None:
        assert code == 2, (stdout, stderr)
        err = stderr.strip().splitlines()
        assert len(err) == 1, stderr
        assert err[0].startswith("error: ")
        for s in case.error:
            assert s in err[0], err[0]
        assert "__" not in err[0] and "Traceback" not in stderr
        assert stdout == ""  # no progress or spinner line before the error
        return
    assert code == 0, stderr
    assert stderr == ""
    rep = json.loads((out / "ingest_report.json").read_text())
    # the accounting identity
    assert rep["rows_in"] == rep["accepted"] + rep["quarantined"] + rep["filtered_total"]
    assert rep["balanced"]
    assert rep["quarantined"] == case.quarantined, rep["quarantine_reasons"]
    # no good row lost, no bad row kept
    ev = pl.read_parquet(out / "events.parquet")
    keys = ev[case.key].to_list()
    assert set(keys) >= case.good
    assert not any(k.startswith("b") for k in keys if k not in case.good)
    if case.key == "item_id":
        assert sorted(k for k in keys if k.startswith("g")) == sorted(case.good)
    else:  # unisrec: every good user keeps its whole 5-event sequence
        counts = ev.group_by("user_id").len()
        assert counts.filter(pl.col("user_id").is_in(list(case.good)))["len"].to_list() == [5] * len(case.good)
    assert ev.null_count().select("user_id", "item_id", "timestamp").sum_horizontal().item() == 0
    q = pl.read_parquet(out / "quarantine.parquet")
    assert q.filter(pl.col("kind") == "event").height == case.quarantined
    for col in ("column", "reason", "raw"):
        assert not any("__row" in (v or "") for v in q[col].to_list())
    if case.quarantined:
        assert q["row"].drop_nulls().len() == q.height  # every quarantined row names its row
    assert (out / "_COMPLETE").is_file()


def test_rerun_leaves_no_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # first run filters a duplicate (filtered.parquet written); the second has none: the
    # earlier filtered.parquet must not survive beside a report that says 0
    ev = tmp_path / "ev.csv"
    ev.write_text("\n".join([CSV_HEAD, *CSV_GOOD, CSV_GOOD[0]]) + "\n")
    out = tmp_path / "ds"
    code, _, err = run_cli(["ingest", "generic", str(ev), "--map", "value=value", "-o", str(out)],
                           capsys, monkeypatch)
    assert code == 0, err and (out / "filtered.parquet").is_file()
    (out / "stray.txt").write_text("from an earlier run")
    ev.write_text("\n".join([CSV_HEAD, *CSV_GOOD]) + "\n")
    code, _, err = run_cli(["ingest", "generic", str(ev), "--map", "value=value", "-o", str(out)],
                           capsys, monkeypatch)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["_COMPLETE", "events.parquet", "ingest_report.json",
                                                      "items.parquet", "manifest.json", "quarantine.parquet"]
    assert json.loads((out / "ingest_report.json").read_text())["filtered_total"] == 0
    assert not list(tmp_path.glob(".ds.*"))  # no temporary sibling left behind


def test_prepare_refuses_incomplete_dataset(tmp_path: Path, capsys: pytest.CaptureFixture,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    ev = tmp_path / "ev.csv"
    ev.write_text("\n".join([CSV_HEAD, *[f"u{k % 2},g{k},{iso(k)},1" for k in range(N_GOOD)]]) + "\n")
    ds = tmp_path / "ds"
    assert run_cli(["ingest", "generic", str(ev), "-o", str(ds)], capsys, monkeypatch)[0] == 0
    code, _, err = run_cli(["prepare", str(ds), "-o", str(tmp_path / "split")], capsys, monkeypatch)
    assert code == 0, err
    (tmp_path / "split" / "split.npz").write_bytes(b"stale")
    code, _, err = run_cli(["prepare", str(ds), "-o", str(tmp_path / "split")], capsys, monkeypatch)
    assert code == 0, err  # re-run replaces the whole folder
    from shiftrec.data.splits import open_split

    assert len(open_split(tmp_path / "split").test) == 2
    (ds / "_COMPLETE").unlink()
    code, out, err = run_cli(["prepare", str(ds), "-o", str(tmp_path / "split2")], capsys, monkeypatch)
    assert code == 2 and out == ""
    lines_ = err.strip().splitlines()
    assert len(lines_) == 1 and "ds" in lines_[0] and "incomplete" in lines_[0] and "_COMPLETE" in lines_[0]
    (tmp_path / "split" / "_COMPLETE").unlink()
    from shiftrec.errors import ArtifactError

    with pytest.raises(ArtifactError, match="incomplete"):
        open_split(tmp_path / "split")
    code, _, err = run_cli(["prepare", str(ds), "-o", str(tmp_path / "ev.csv" / "x")], capsys, monkeypatch)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "regular file" in err


def _check_case_builder(fn: Callable[[], list[Case]]) -> None:  # pragma: no cover - debug aid
    for c in fn():
        print(c.id, list(c.files))
