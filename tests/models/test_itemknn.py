from __future__ import annotations

import numpy as np
import pytest

from shiftrec.errors import ConfigError
from shiftrec.models.itemknn import ItemKNN, ItemKNNConfig, cooccurrence


def test_cooccurrence_counts_directed_pairs_within_window():
    cfg = ItemKNNConfig(window=2, distance_decay=0.5, backward=0.25)
    c = cooccurrence([np.array([1, 2, 3]), np.array([2, 1])], 3, cfg).toarray()
    # forward: 1->2 (d1), 2->3 (d1), 1->3 (d2, 0.5), 2->1 (d1); backward = 0.25 x the reverse
    assert c[1, 2] == pytest.approx(1 + 0.25)
    assert c[2, 1] == pytest.approx(0.25 + 1)
    assert c[1, 3] == pytest.approx(0.5) and c[3, 1] == pytest.approx(0.125)
    assert c[2, 3] == pytest.approx(1) and c[3, 2] == pytest.approx(0.25)
    assert np.all(np.diag(c) == 0)
    c1 = cooccurrence([np.array([1, 2, 3])], 3, ItemKNNConfig(window=1)).toarray()
    assert c1[1, 3] == 0


def test_recent_items_weigh_more():
    from tests.models.cyclic import cyclic_split

    split = cyclic_split(n_users=40, n_items=10)
    m = ItemKNN(recency_decay=0.5).fit(split)
    s = m.score([np.array([3, 7])])
    assert s[0, 8] > s[0, 4]  # the item after the most recent one wins


def test_bad_alpha():
    with pytest.raises(ConfigError, match="alpha"):
        ItemKNN(alpha=2.0)
