"""A servable run: one folder holding everything `shiftrec.serve` needs to answer requests.

    run/
      manifest.json     kind "run": model name, counts, and a fingerprint of every part
      model/            the saved model folder (any registry model, or a topic profile)
      item_map.npz      item keys "domain/item_id" in the model's item index (row 0 = padding)
      catalogue.parquet item_id, domain, title, category, price, description (row i = index i + 1)
      topics/           interest.topics.Topics (topic per catalogue item, names)
      flows.json        platform topic -> topic migrations between time windows (interest.flows)
      item_flows/       item -> next item flows (ItemKNN on the training sequences): the model's
                        own flows for itemknn/shiftfusion, counted here for the other models
      users.npz         every user's event history in the item index (the serving start state)
      popularity.npz    training counts per item (cold users, "popular now")
      shift.json        the shift detector's configuration (interest.shifts.ShiftConfig)

`write_run` refuses a model whose item index or data fingerprint disagrees with the split it is
packaged with, naming both fingerprints. `serve` only loads runs; the writer lives here because
pipelines may not import serve.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from shiftrec.config import to_dict
from shiftrec.data.schema import Dataset
from shiftrec.data.splits import IdMap, SeqSplit
from shiftrec.errors import ArtifactError, InputError
from shiftrec.manifest import atomic_dir, make_manifest, read_json, sha256_file, write_json

RUN_KIND = "run"
RUN_FORMAT = 1


def item_map_fingerprint(keys: np.ndarray | list[str]) -> str:
    """Order-sensitive hash of the item keys (row 0, padding, included)."""
    h = hashlib.sha256()
    for k in keys:
        h.update(str(k).encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:32]


def folder_fingerprint(path: str | Path) -> str:
    """Hash of every file's relative path and content in a folder (sorted)."""
    p = Path(path)
    h = hashlib.sha256()
    for f in sorted(x for x in p.rglob("*") if x.is_file()):
        h.update(str(f.relative_to(p)).encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()[:32]


def _model_data_fingerprint(model_dir: Path) -> str | None:
    man = read_json(model_dir / "manifest.json")
    fp = man.get("data_fingerprint")
    if fp is None and isinstance(man.get("data_fingerprints"), dict) and man["data_fingerprints"]:
        fp = next(iter(man["data_fingerprints"].values()))
    return fp


def _user_histories(ds: Dataset, item_map: IdMap) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                           np.ndarray]:
    """(user_ids, indptr, items, times) of every user's events in time order (item index)."""
    ev = (ds.events.select("user_id", "domain", "item_id",
                           pl.col("timestamp").dt.epoch("s").alias("t"))
          .with_row_index("__r")
          .join(item_map.frame(), on=["domain", "item_id"], how="left", maintain_order="left")
          .filter(pl.col("idx").is_not_null())
          .sort("user_id", "t", "__r"))
    users = ev["user_id"].to_numpy()
    if len(users):
        change = np.ones(len(users), bool)
        change[1:] = users[1:] != users[:-1]
        starts = np.flatnonzero(change)
    else:
        starts = np.zeros(0, np.int64)
    indptr = np.concatenate([starts, [len(users)]]).astype(np.int64)
    return (users[starts].astype(str), indptr, ev["idx"].to_numpy().astype(np.int64),
            ev["t"].to_numpy().astype(np.int64))


def _catalogue(ds: Dataset, item_map: IdMap) -> pl.DataFrame:
    fr = item_map.frame()
    cols = [c for c in ("title", "category", "price", "description") if c in ds.items.columns]
    items = ds.items.select("domain", "item_id", *cols).unique(["domain", "item_id"], keep="first")
    cat = fr.join(items, on=["domain", "item_id"], how="left", maintain_order="left").sort("idx")
    for c, dt in (("title", pl.String), ("category", pl.String), ("price", pl.Float64),
                  ("description", pl.String)):
        if c not in cat.columns:
            cat = cat.with_columns(pl.lit(None, dt).alias(c))
    return cat.select("item_id", "domain", pl.col("title").cast(pl.String),
                      pl.col("category").cast(pl.String), pl.col("price").cast(pl.Float64),
                      pl.col("description").cast(pl.String))


def write_run(out_dir: str | Path, *, model_dir: str | Path, split: SeqSplit | str | Path,
              dataset: Dataset | str | Path, topics_dir: str | Path | None = None,
              shift_config: Any = None, flow_every: str = "3mo",
              name: str | None = None) -> Path:
    """Package a trained model as a servable run folder (written atomically).

    - `model_dir`: a saved model folder (`shiftrec train ... -o DIR`, or `model.save(DIR)`);
    - `split`: the split (object or folder) the model was trained on: its item map becomes the
      run's, and a model whose item count or data fingerprint disagrees is refused;
    - `dataset`: the clean dataset (object or folder): catalogue and user histories;
    - `topics_dir`: a topics folder (`shiftrec topics`); default: category topics of the items;
    - `shift_config`: an interest.shifts.ShiftConfig (default: ShiftConfig());
    - `flow_every`: the platform flows' window length.

    Returns the run folder.
    """
    from shiftrec.interest.events import InterestEvents
    from shiftrec.interest.flows import FlowConfig, compute_flows
    from shiftrec.interest.shifts import ShiftConfig
    from shiftrec.interest.topics import Topics, category_topics
    from shiftrec.models.itemknn import ItemKNN

    model_dir = Path(model_dir)
    if not (model_dir / "manifest.json").is_file():
        raise ArtifactError("not a model folder (manifest.json missing)", path=model_dir)
    sp = split if isinstance(split, SeqSplit) else SeqSplit.load(split)
    ds = dataset if isinstance(dataset, Dataset) else Dataset.load(dataset)
    man = read_json(model_dir / "manifest.json")
    model_name = man.get("model")
    n_model = man.get("n_items")
    if n_model is None and isinstance(man.get("dims"), dict):
        n_model = man["dims"].get("n_items")
    split_fp = sp.meta.get("fingerprint")
    model_fp = _model_data_fingerprint(model_dir)
    if model_fp is not None and split_fp is not None and model_fp != split_fp:
        raise ArtifactError(f"the model was trained on data {model_fp} but the split is of data "
                            f"{split_fp}: package it with the split it was trained on",
                            path=model_dir)
    if n_model is not None and int(n_model) != sp.n_items:
        raise ArtifactError(f"the model scores {n_model} items but split '{sp.name}' has "
                            f"{sp.n_items} (item map {item_map_fingerprint(sp.item_map.keys)})",
                            path=model_dir)
    ds_fp = ds.fingerprint()
    if split_fp is not None and ds_fp != split_fp:
        raise InputError(f"the dataset (fingerprint {ds_fp}) is not the one split '{sp.name}' "
                         f"was made from ({split_fp})")
    topics = Topics.load(topics_dir) if topics_dir is not None else category_topics(ds.items)
    if len(topics.names) < 2:  # the run's shift detection needs two; say so now, not at serving
        what = "topics folder" if topics_dir is not None else "catalogue's categories"
        raise InputError(f"the {what} give{'s' if topics_dir is not None else ''} "
                         f"{len(topics.names)} topic; a servable run needs at least 2 for shift "
                         "detection: learn topics from the titles with `shiftrec topics DATASET "
                         "-o TOPICS` and pass --topics TOPICS")
    shift_cfg = shift_config or ShiftConfig()
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        shutil.copytree(model_dir, tmp / "model",
                        ignore=shutil.ignore_patterns("trainer", "metrics.ranks.npz"))
        keys = sp.item_map.keys.astype(str)
        np.savez(tmp / "item_map.npz", keys=keys)
        _catalogue(ds, sp.item_map).write_parquet(tmp / "catalogue.parquet")
        topics.save(tmp / "topics", data_fingerprint=ds_fp)
        ev = InterestEvents.from_frame(ds.events, topics)
        flows = compute_flows(ev, topics.names, FlowConfig(every=flow_every))
        write_json(tmp / "flows.json", flows.to_json())
        item_flows = ItemKNN().fit(sp)
        item_flows.save(tmp / "item_flows")
        users, indptr, items, times = _user_histories(ds, sp.item_map)
        np.savez_compressed(tmp / "users.npz", user_ids=users, indptr=indptr, items=items,
                            times=times)
        counts = np.bincount(sp.train.items, minlength=sp.n_items + 1).astype(np.float32)
        np.savez(tmp / "popularity.npz", counts=counts)
        write_json(tmp / "shift.json", to_dict(shift_cfg))
        parts = {"model": folder_fingerprint(tmp / "model"),
                 "item_map": item_map_fingerprint(keys),
                 "catalogue": sha256_file(tmp / "catalogue.parquet")[:32],
                 "topics": folder_fingerprint(tmp / "topics"),
                 "flows": sha256_file(tmp / "flows.json")[:32],
                 "item_flows": folder_fingerprint(tmp / "item_flows"),
                 "users": sha256_file(tmp / "users.npz")[:32],
                 "popularity": sha256_file(tmp / "popularity.npz")[:32],
                 "shift_config": sha256_file(tmp / "shift.json")[:32]}
        write_json(tmp / "manifest.json", make_manifest(
            RUN_KIND, format=RUN_FORMAT, name=name or f"{model_name}-{sp.name}", model=model_name,
            n_items=sp.n_items, n_users=len(users), n_events=int(indptr[-1]),
            n_topics=topics.n_topics, split=sp.name, data_fingerprint=ds_fp,
            model_data_fingerprint=model_fp, fingerprints=parts))
    return out
