"""The repeat/explore gate (RepeatNet's two modes, with one share for every user) that the
sequence models may put over their scores: `repeat_share` counts, on training sequences, how
often the next item was already in the history the model reads; `repeat_gate` gives the
history's items together that share of the probability and the other items the rest. In Amazon
reviews almost no one comes back to an item (0.06% of next items in the shipped checkpoint's
sources), so with the gate a model ranking every item puts the history below the rest; in a
shop where people buy again the history keeps its due share. The gate is counted, not trained,
and travels in the model's manifest. Torch is imported only when scoring."""

from __future__ import annotations

from typing import Any

import numpy as np

from shiftrec.data.splits import Seqs
from shiftrec.errors import ArtifactError, ConfigError


def repeat_share(seqs: Seqs | list[Seqs], max_len: int) -> dict[str, Any]:
    """The share of the repeat/explore gate (`repeat_fit` of the sequence nets), counted on training
    sequences: of every next item with at least one item before it, the fraction found among the
    `max_len` items before it (what the model reads), smoothed (repeats + 1) / (transitions + 2)
    so that a log without repeats still leaves the history a small chance. Returns the share
    with its counts (for the manifest)."""
    repeats = transitions = 0
    for s in seqs if isinstance(seqs, list) else [seqs]:
        for i in range(len(s)):
            seq = s[i]
            if len(seq) < 2:
                continue
            last: dict[int, int] = {}  # item -> its latest position
            for t, item in enumerate(seq.tolist()):
                if t and t - last.get(item, -max_len - 1) <= max_len:
                    repeats += 1
                last[item] = t
            transitions += len(seq) - 1
    return {"share": (repeats + 1) / (transitions + 2), "repeats": repeats,
            "transitions": transitions, "max_len": int(max_len)}


def repeat_gate(scores: Any, seq: Any, share: float) -> Any:
    """A repeat/explore gate over full score rows (RepeatNet's two modes, with one share for
    every user): the items of each row's history `seq` (B, L; 0 = padding) together get
    probability `share`, spread by softmax over their scores, and the other items the rest,
    1 - share. Returns the log of that mixture, so within each group the order is unchanged and
    only where the history items stand against the rest moves. Column 0 stays -inf; a row
    without history keeps its order."""
    import torch

    if not 0.0 < share < 1.0:
        raise ConfigError(f"repeat share must be in (0, 1), got {share}")
    scores = scores.float()  # order within each group kept (half precision would tie many)
    seen = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    seen.scatter_(1, seq.clamp_min(0).long(), True)
    seen[:, 0] = False
    ninf = torch.tensor(float("-inf"), dtype=scores.dtype, device=scores.device)
    rest = torch.where(seen, ninf, scores)
    rest[:, 0] = ninf
    lse_seen = torch.logsumexp(torch.where(seen, scores, ninf), dim=1, keepdim=True)
    lse_rest = torch.logsumexp(rest, dim=1, keepdim=True)
    # a group whose scores are all -inf (already excluded) stays -inf, not NaN
    lse_seen = torch.where(torch.isfinite(lse_seen), lse_seen, torch.zeros_like(lse_seen))
    lse_rest = torch.where(torch.isfinite(lse_rest), lse_rest, torch.zeros_like(lse_rest))
    out = torch.where(seen, scores - lse_seen + float(np.log(share)),
                      scores - lse_rest + float(np.log1p(-share)))
    out[:, 0] = ninf
    return out


def stored_gate(gate: Any, path: Any = None) -> dict[str, Any] | None:
    """A manifest's `repeat_gate` (None: no gate) after checking it holds a share in (0, 1);
    anything else is one ArtifactError naming the folder."""
    if gate is None:
        return None
    share = gate.get("share") if isinstance(gate, dict) else None
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0.0 < float(share) < 1.0:
        raise ArtifactError(f"manifest's repeat_gate share must be a number in (0, 1), got {share!r}",
                            path=path)
    return dict(gate)
