"""`shiftrec encode`: embed item text with a packaged or local encoder (thin CLI layer)."""

from __future__ import annotations

import enum
import time
from pathlib import Path
from typing import Annotated, Any

import typer

ENCODE_HELP = (
    "Embed the text of every item with a text encoder and write an item-embeddings folder "
    "(item_embeddings.npz + manifest.json; row 0 is padding, rows follow the item keys).\n\n"
    "INPUT is a prepared dataset folder (as written by Dataset.save) or an items file "
    "(.parquet, .csv, .csv.gz, .tsv) with an item_id column and text columns. With --cache-dir, "
    "a re-run only encodes items whose text is new or changed.\n\n"
    "Encoders: minilm (384-d, English), use-multilingual (512-d, 16 languages incl. Chinese), "
    "or the path of a local sentence-transformers / Hugging Face model folder.\n\n"
    "Example:\n\n"
    "shiftrec encode data/scientific --encoder minilm --fields title,category,brand "
    "--cache-dir cache/minilm --out features/scientific-minilm\n\n"
    "--engine ray runs the encoder on a pool of Ray actors (each loads the model once; same "
    "vectors as one process): a local Ray by default, --address auto for the running cluster, "
    "or --address ray://HEAD:10001. Workers need shiftrec and the encoder's packages installed; "
    "a model folder must sit at the same path on every worker."
)


class EncodeEngine(enum.StrEnum):
    SINGLE = "single"  # the encoder in this process
    RAY = "ray"  # a pool of Ray actors (shiftrec.text.ray_encode.RayEncoder)


def _read_items(path: Path, domain: str):
    import polars as pl

    from shiftrec.data.schema import Dataset, conform_items
    from shiftrec.errors import InputError

    if path.is_dir():
        return Dataset.load(path).items
    if not path.exists():
        raise InputError("input not found", path=path)
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            df = pl.read_parquet(path)
        elif name.endswith((".csv", ".csv.gz")):
            df = pl.read_csv(path, infer_schema=False)
        elif name.endswith((".tsv", ".tsv.gz")):
            df = pl.read_csv(path, separator="\t", infer_schema=False, quote_char=None)
        else:
            raise InputError("unsupported items file: use .parquet, .csv, .csv.gz or .tsv",
                             path=path)
    except (pl.exceptions.PolarsError, OSError) as e:
        raise InputError(f"cannot read items: {str(e).splitlines()[0]}", path=path) from None
    if "item_id" not in df.columns:
        raise InputError(f"items file lacks column 'item_id'; columns: {df.columns}", path=path,
                         column="item_id")
    items = conform_items(df)
    return items.with_columns(pl.col("domain").fill_null(domain))


def encode(
    input: Annotated[Path, typer.Argument(help="Dataset folder or items file.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for the embeddings.")],
    encoder: Annotated[str, typer.Option(help="minilm, use-multilingual, or a model folder.")] = "minilm",
    fields: Annotated[str, typer.Option(help="Comma-separated: title,category,brand,description.")]
    = "title,category,brand",
    max_chars: Annotated[int, typer.Option(help="Cut each item text to this many characters.")] = 512,
    lowercase: Annotated[bool, typer.Option(help="Lower-case the text.")] = False,
    cache_dir: Annotated[Path | None, typer.Option(help="Embedding cache folder (per encoder).")]
    = None,
    split: Annotated[Path | None, typer.Option(help="Align rows with this split's item map.")] = None,
    batch_size: Annotated[int, typer.Option(help="Texts per encoder batch.")] = 64,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda when present).")]
    = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads for the encoder.")] = None,
    domain: Annotated[str, typer.Option(help="Domain for an items file without one.")] = "default",
    engine: Annotated[EncodeEngine, typer.Option(help="single: this process; ray: Ray actors.")]
    = EncodeEngine.SINGLE,
    address: Annotated[str | None, typer.Option(
        help="Ray cluster for --engine ray: auto, ray://HOST:10001 (default: a new local Ray, "
             "or RAY_ADDRESS).")] = None,
    workers: Annotated[int | None, typer.Option(
        help="Ray actors for --engine ray (default: cluster CPUs / threads).")] = None,
) -> None:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from shiftrec.data.splits import IdMap, SeqSplit
    from shiftrec.errors import ConfigError, ShiftrecError
    from shiftrec.manifest import fingerprint_frame
    from shiftrec.text import TextConfig, embed_items, parse_fields

    console, err = Console(), Console(stderr=True)
    try:
        cfg = TextConfig(fields=parse_fields(fields), max_chars=max_chars, lowercase=lowercase)
        enc: Any = encoder
        if engine is EncodeEngine.RAY:
            from shiftrec.text.ray_encode import RayEncoder

            enc = RayEncoder(encoder, workers=workers, address=address, device=device,
                             threads=threads or 1)
        elif address is not None or workers is not None:
            raise ConfigError("--address and --workers apply to --engine ray only")
        items = _read_items(input, domain)
        if split is not None:
            item_map = SeqSplit.load(split).item_map
        else:
            item_map = IdMap.from_frame(
                items.unique(["domain", "item_id"], keep="first", maintain_order=True))
        t0 = time.perf_counter()
        # the bar appears with the first batch, so a fully cached run or an early error shows none
        bar = Progress(TextColumn("encoding"), BarColumn(), MofNCompleteColumn(),
                       TimeRemainingColumn(), console=err)
        task = bar.add_task("encode", total=None)

        def progress(done: int, total: int) -> None:
            if total:
                bar.start()
                bar.update(task, completed=done, total=total)

        try:
            emb, stats = embed_items(items, item_map, enc, cfg, cache_dir=cache_dir,
                                     progress=progress, batch_size=batch_size, device=device,
                                     threads=threads)
        finally:
            bar.stop()
        emb.meta |= {"source": str(input), "items_fingerprint": fingerprint_frame(items)}
        emb.save(out)
    except ShiftrecError:
        raise  # cli.app.main prints it as one line and exits with code 2
    secs = time.perf_counter() - t0
    console.print(
        f"{emb.n_items} items -> {out} ({emb.encoder}, dim {emb.dim}); "
        f"{stats.unique} distinct texts: {stats.cached} cached, {stats.encoded} encoded "
        f"in {secs:.1f}s" + (f" on {enc.workers_used} Ray workers" if engine is EncodeEngine.RAY
                             and stats.encoded else ""), highlight=False, soft_wrap=True)
    if emb.meta.get("empty_texts"):
        console.print(f"[yellow]note:[/yellow] {emb.meta['empty_texts']} items have no text",
                      highlight=False)


def register(app: typer.Typer) -> None:
    """Add `encode` to the main CLI."""
    app.command("encode", help=ENCODE_HELP)(encode)
