"""Tamper tests for saved model folders, for every registered model (models.artifact).

Each registry entry is fitted on the cyclic fixture (the contract test's tiny settings), saved,
and then damaged the ways a real folder gets damaged: random bytes written into a weight file,
the weights of another run copied in, an invalid or edited manifest, an old manifest without
hashes, a model trained on another item map of the same size. Every case must be refused with
one ArtifactError line (never a traceback, never silently wrong scores).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from shiftrec.data.splits import IdMap
from shiftrec.errors import ArtifactError
from shiftrec.manifest import COMPLETE, sha256_file
from shiftrec.models.artifact import check_model_split, item_map_fingerprint
from shiftrec.models.registry import MODELS, REGISTRY, load_model
from tests.models.cyclic import cyclic_split
from tests.models.test_contract import POPULAR, _build


def rehash(folder: Path) -> None:
    """Re-record the SHA-256 of the listed files (to test what lies past the hash check)."""
    man_path = Path(folder) / "manifest.json"
    man = json.loads(man_path.read_text())
    man["files"] = {k: sha256_file(Path(folder) / k) for k in man["files"]}
    man_path.write_text(json.dumps(man))


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


@pytest.fixture(scope="module")
def split():
    return cyclic_split(n_users=60, n_items=12, popular=POPULAR)


@pytest.fixture(scope="module")
def other_run_split():
    """Same items and item count, other users: 'another run' of the same model."""
    return cyclic_split(n_users=50, n_items=12, popular=POPULAR, seed=1)


@pytest.fixture(scope="module", params=sorted(MODELS))
def saved(request, split, other_run_split, tmp_path_factory):
    name = request.param
    root = tmp_path_factory.mktemp(f"art-{name}")
    model = _build(name, split).fit(split)
    model.save(root / "a")
    _build(name, other_run_split).fit(other_run_split).save(root / "b")
    return name, model, root


def _copy(root: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "m"
    shutil.copytree(root / "a", dst)
    return dst


def _files(folder: Path) -> list[str]:
    """Every file a manifest in the folder lists (a fusion's base/ and flow/ have their own)."""
    out = []
    for man in sorted(folder.rglob("manifest.json")):
        sub = man.parent.relative_to(folder)
        out += [str(sub / f) for f in json.loads(man.read_text())["files"]]
    return out


def test_manifest_records_hashes_and_item_map(saved, split):
    name, model, root = saved
    man = json.loads((root / "a" / "manifest.json").read_text())
    assert (root / "a" / COMPLETE).is_file()
    assert man["files"] and all(sha256_file(root / "a" / f) == h for f, h in man["files"].items())
    assert man["item_keys_hash"] == item_map_fingerprint(split)
    assert man["data_fingerprint"] == "cyclic-0"
    again = load_model(root / "a", split=split)
    hist = [split.test.history[i] for i in range(10)]
    assert np.array_equal(again.score(hist), model.score(hist))


def test_random_bytes_in_weights_are_refused(saved, tmp_path):
    name, _, root = saved
    for fname in _files(root / "a"):
        d = _copy(root, tmp_path / fname)
        f = d / fname
        data = bytearray(f.read_bytes())
        mid = len(data) // 2
        data[mid:mid + 64] = np.random.default_rng(0).integers(0, 256, 64, dtype=np.uint8).tobytes()
        f.write_bytes(bytes(data))
        with pytest.raises(ArtifactError) as e:
            load_model(d)
        assert "does not match the manifest" in _one_line(e) and Path(fname).name in str(e.value), name


#: models that learn nothing from interactions: another run on the same items writes the same
#: files (TextSim stores the unit item-text table), so there is nothing to swap
SAME_FILES_EVERY_RUN = {"textsim"}


def test_weights_swapped_from_another_run_are_refused(saved, tmp_path):
    name, _, root = saved
    if name in SAME_FILES_EVERY_RUN:
        assert all((root / "a" / f).read_bytes() == (root / "b" / f).read_bytes() for f in _files(root / "a"))
        pytest.skip(f"{name} learns nothing from interactions: every run writes the same files")
    d = _copy(root, tmp_path)
    swapped = 0
    for fname in _files(root / "a"):
        if (root / "b" / fname).read_bytes() != (d / fname).read_bytes():
            shutil.copy(root / "b" / fname, d / fname)
            swapped += 1
    assert swapped, f"{name}: the two runs wrote identical files"
    with pytest.raises(ArtifactError) as e:
        load_model(d)
    assert "another run" in _one_line(e)


def test_other_item_map_with_the_same_item_count_is_refused(saved, split):
    name, model, root = saved
    keys = np.array(["<pad>", *[f"other/{i}" for i in range(1, split.n_items + 1)]], dtype=object)
    other = dataclasses.replace(split, name="other-shop", item_map=IdMap(keys))
    mine, theirs = item_map_fingerprint(split), item_map_fingerprint(other)
    for attempt in (lambda: load_model(root / "a", split=other),
                    lambda: check_model_split(model, other)):
        with pytest.raises(ArtifactError) as e:
            attempt()
        msg = _one_line(e)
        assert mine in msg and theirs in msg and "other-shop" in msg, (name, msg)
    check_model_split(model, split)  # its own split is fine


def test_invalid_json_manifest_is_one_line(saved, tmp_path):
    _, _, root = saved
    d = _copy(root, tmp_path)
    (d / "manifest.json").write_text('{"model": "sasrec", ')
    with pytest.raises(ArtifactError) as e:
        load_model(d)
    assert "not valid JSON" in _one_line(e)
    (d / "manifest.json").write_text("[1, 2]")
    with pytest.raises(ArtifactError) as e:
        load_model(d)
    assert "not a JSON object" in _one_line(e)


def test_manifest_naming_another_model_is_one_line(saved, tmp_path):
    name, _, root = saved
    for other in sorted(REGISTRY):
        if REGISTRY[other].manifest_name == REGISTRY[name].manifest_name:
            continue
        d = _copy(root, tmp_path / other)
        man = json.loads((d / "manifest.json").read_text())
        man["model"] = REGISTRY[other].manifest_name
        (d / "manifest.json").write_text(json.dumps(man))
        with pytest.raises(ArtifactError) as e:
            load_model(d)
        _one_line(e)


def test_manifest_without_hashes_or_marker_is_refused(saved, tmp_path):
    _, _, root = saved
    d = _copy(root, tmp_path)
    man = json.loads((d / "manifest.json").read_text())
    del man["files"]
    (d / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ArtifactError) as e:
        load_model(d)
    assert "no file hashes" in _one_line(e)
    (d / COMPLETE).unlink()
    with pytest.raises(ArtifactError) as e:
        load_model(d)
    assert "incomplete" in _one_line(e)


def test_listed_file_missing_is_one_line(saved, tmp_path):
    _, _, root = saved
    d = _copy(root, tmp_path)
    (d / _files(d)[0]).unlink()
    with pytest.raises(ArtifactError) as e:
        load_model(d)
    assert "missing" in _one_line(e)


def test_resave_leaves_nothing_of_the_earlier_folder(saved, tmp_path):
    name, model, root = saved
    d = _copy(root, tmp_path)
    (d / "stale.parquet").write_text("from an earlier run")
    (d / "trainer").mkdir()
    (d / "trainer" / "checkpoint.json").write_text("{}")
    model.save(d)
    assert not (d / "stale.parquet").exists()
    assert (d / "trainer" / "checkpoint.json").exists()  # this run's resumable checkpoint stays
    load_model(d)


def test_shipped_checkpoint_verifies_and_a_tampered_copy_does_not(tmp_path):
    from shiftrec.models.transfer import read_manifest
    from shiftrec.models.transfer_fit import pretrained_path

    ck = pretrained_path()
    man = read_manifest(ck)  # hashes recorded in the shipped manifest verify (no marker needed)
    assert "model.safetensors" in man["files"]
    copy = tmp_path / "ck"
    shutil.copytree(ck, copy)
    read_manifest(copy)
    with (copy / "model.safetensors").open("r+b") as f:
        f.seek(4096)
        f.write(b"\x00garbage\x00" * 8)
    with pytest.raises(ArtifactError) as e:
        read_manifest(copy)
    assert "does not match the manifest" in _one_line(e)


def test_loaders_keep_working_on_manifest_fields_they_need(saved, tmp_path):
    """An edited manifest that lacks a field its loader needs is one line too."""
    name, _, root = saved
    d = _copy(root, tmp_path)
    man = json.loads((d / "manifest.json").read_text())
    for k in ("n_items", "config"):
        man.pop(k, None)
    (d / "manifest.json").write_text(json.dumps(man))
    try:
        load_model(d)
    except ArtifactError as e:
        assert "\n" not in str(e)


