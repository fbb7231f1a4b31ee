"""Constants of the shift-aware model shared by its wrapper and its torch network (no torch)."""

from __future__ import annotations

import enum

DAY = 86400

#: the shift-detector features the gate sees, in this order
FEATURE_NAMES = ("jsd", "slow_entropy", "fast_entropy", "length", "last_gap", "fast_top_share",
                 "model_on_slow", "model_on_fast", "model_topic_entropy")
N_FEATURES = len(FEATURE_NAMES)


class GateMode(enum.StrEnum):
    SHIFT = "shift"  # prior weights from the shift-detector features + transformer state
    FIXED = "fixed"  # one learned constant weight per prior
