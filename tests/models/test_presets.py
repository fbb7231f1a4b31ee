"""models.presets: the shift-aware variants table is the one the recorded results were run with,
and every variant and setting builds a valid model config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from shiftrec.errors import ConfigError
from shiftrec.models import presets
from shiftrec.models.shiftaware import ShiftAwareConfig

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "shift_slices.json"


def test_variants_table_matches_the_recorded_results() -> None:
    if not RESULTS.exists():
        pytest.skip(f"{RESULTS} not found")
    out = json.loads(RESULTS.read_text())
    assert {k: dict(v) for k, v in presets.VARIANTS.items()} == out["variants"]
    for data, ab in out["ablations"].items():
        assert {v: presets.variant_overrides(v) for v in ab["overrides"]} == ab["overrides"], data
        st = presets.setting(data)
        assert st.sasrec_epochs == out["budget"]["epochs_cap"][data]
        assert st.finetune_epochs == out["budget"]["finetune_epochs_cap"][data]
    b = presets.Budget()
    assert (b.lr, b.patience, b.finetune_patience, b.valid_max_users, b.threads) == (
        out["budget"]["lr"], out["budget"]["patience"], out["budget"]["ft_patience"],
        out["budget"]["valid_users_for_early_stopping"], out["budget"]["threads"])


@pytest.mark.parametrize("name", list(presets.VARIANTS))
def test_every_variant_is_a_valid_config(name: str) -> None:
    from shiftrec.models.shiftaware import ShiftAware

    m = presets.shiftaware_variant(name, np.zeros(5, np.int64), "unused", epochs=2, seed=3)
    assert isinstance(m.config, ShiftAwareConfig)
    for k, v in presets.VARIANTS[name].items():
        assert getattr(m.config, k) == v
    assert m.config.train.seed == 3 and m.config.train.phases[0].epochs == 2
    assert m.config.train.phases[0].patience == presets.Budget().finetune_patience
    assert isinstance(m, ShiftAware)


def test_none_switches_every_signal_off() -> None:
    m = presets.shiftaware_variant("none", np.zeros(5, np.int64), "unused", epochs=1, seed=0)
    assert m.config.n_priors == 0 and not m.config.gap_emb and not m.config.time_bias


def test_unknown_names_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="variant"):
        presets.variant_overrides("everything")
    with pytest.raises(ConfigError, match="setting"):
        presets.setting("toys")
    with pytest.raises(ConfigError):
        presets.Setting(10, 2, ("none", "nope"))
    with pytest.raises(ConfigError, match="device"):
        presets.train_config(1, 0, 1, device="tpu")
