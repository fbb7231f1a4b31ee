"""The transfer model's domain-relative popularity feature (TransferConfig.pop_buckets): the
bucket rule by hand, that it is learned and carried to a new domain by counts alone, and that
fitted models keep their buckets through save/load and new items."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest

from shiftrec.data.schema import Dataset
from shiftrec.data.splits import leave_one_out
from shiftrec.errors import ArtifactError, ConfigError, InputError
from shiftrec.models.transfer_config import TransferConfig, popularity_buckets

torch = pytest.importorskip("torch")

from shiftrec.models.transfer import (  # noqa: E402
    TransferRec,
    build_net,
    load_checkpoint,
    save_checkpoint,
    train_item_counts,
)

TINY = TransferConfig(hidden=16, n_layers=1, n_heads=2, inner=32, n_experts=2, max_len=8,
                      dropout=0.0, attn_dropout=0.0, adaptor_dropout=0.0, gate_noise=False,
                      temperature=0.1, pop_buckets=5)


def test_buckets_by_hand():
    # row 0 padding; domain 1 = rows 1-4 counts 0,1,1,5; domain 2 = rows 5-8 counts 100,3,0,2
    counts = np.array([0, 0, 1, 1, 5, 100, 3, 0, 2])
    # domain 1: positives 1,1,5 -> mid-rank quantiles 2/6, 2/6, 5/6 -> 1 + floor(q * 4) = 2, 2, 4
    # domain 2: positives 100,3,2 -> 5/6, 3/6, 1/6 -> 4, 3, 1; count 0 -> bucket 0
    assert popularity_buckets(counts, 5, [4, 4]).tolist() == [0, 0, 2, 2, 4, 4, 3, 0, 1]
    # one domain: positives 1,1,5,100,3,2 (sorted 1,1,2,3,5,100) -> quantiles 2/12, 2/12, 9/12,
    # 11/12, 7/12, 5/12 -> 1, 1, 4, 4, 3, 2
    assert popularity_buckets(counts, 5).tolist() == [0, 0, 1, 1, 4, 4, 3, 0, 2]
    # relative, not absolute: ten times the traffic gives the same buckets
    assert popularity_buckets(counts * 10, 5, [4, 4]).tolist() == [0, 0, 2, 2, 4, 4, 3, 0, 1]
    assert popularity_buckets(np.zeros(4), 3).tolist() == [0, 0, 0, 0]  # a domain with no counts
    with pytest.raises(InputError, match="sum to the 8 items"):
        popularity_buckets(counts, 5, [4, 3])
    with pytest.raises(InputError, match="non-negative"):
        popularity_buckets(np.array([0, -1, 2]), 5)
    with pytest.raises(InputError, match="n_buckets >= 2"):
        popularity_buckets(counts, 1)


def test_target_buckets_leave_the_predicted_event_out():
    counts = np.array([0, 0, 1, 1, 5, 100, 3, 0, 2])
    # domain 1 (positives sorted 1,1,5): counts - 1 = 0,0,4 -> 0, 0, and 4 at mid-rank 4/6 -> 3
    # domain 2 (positives sorted 2,3,100): 99 -> 4/6 -> 3; 2 -> 1/6 -> 1; 1 -> 0/6 -> 1
    assert popularity_buckets(counts, 5, [4, 4], minus=1).tolist() == [0, 0, 0, 0, 3, 3, 1, 0, 1]
    assert popularity_buckets(counts, 5, [4, 4], minus=0).tolist() == [0, 0, 2, 2, 4, 4, 3, 0, 1]


@pytest.mark.parametrize("objective", ["full_ce", "contrastive"])
def test_a_training_target_uses_its_bucket_without_its_own_event(objective):
    """Items seen once are bucket 0 as targets (their one event is the one being predicted), so
    bucket 0 is pulled up by the positives as a held-out cold item needs; the loss is the cross
    entropy with that one column changed, by hand."""
    import torch.nn.functional as F

    from shiftrec.models.transfer_config import Objective

    n = 6
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, seq_weight=0.0)  # no random item-dropout views
    net = build_net(cfg, np.random.default_rng(0).normal(size=(n + 1, 12)).astype(np.float32))
    net.objective = Objective(objective)
    # items 1-3 seen once; positives sorted 1,1,1,4,9,20: mid-rank quantiles 3/12, 7/12, 9/12,
    # 11/12 -> 1 + floor(q * 4) = 2, 3, 4, 4; without the predicted event (0, 3, 8, 19):
    # 0 -> 0; 3 -> 6/12 -> 3; 8 -> 8/12 -> 3; 19 -> 10/12 -> 4
    net.set_item_popularity(np.array([0, 1, 1, 1, 4, 9, 20]))
    assert net.pop_bucket.tolist() == [0, 2, 2, 2, 3, 4, 4]
    assert net.pop_bucket_target.tolist() == [0, 0, 0, 0, 3, 3, 4]
    with torch.no_grad():
        net.pop_bias.copy_(torch.tensor([-1.0, 0.0, 0.0, 0.5, 1.0]))
    net.eval()
    seq = torch.tensor([[0, 4, 5, 2], [0, 6, 5, 4]])
    tgt = torch.tensor([[0, 5, 2, 1], [0, 5, 4, 3]])
    loss = net.full_ce_loss(seq, tgt) if objective == "full_ce" else net.contrastive_loss(seq, tgt)
    loss.backward()
    assert net.pop_bias.grad[0] < 0  # the once-seen targets raise the no-count bucket
    with torch.no_grad():  # by hand
        sel = tgt > 0
        t = tgt[sel]
        if objective == "full_ce":
            table = net.item_embed()
            s = net.logits(net.encode(seq, table[seq])[sel], table) + net.pop_bias[net.pop_bucket] / 0.1
            s[:, 0] = float("-inf")
            lab = t
        else:
            uniq, lab = torch.unique(t, return_inverse=True)
            h = net.encode(seq, net.item_embed(seq))[sel]
            s = net.logits(h, net.item_embed(uniq)) + net.pop_bias[net.pop_bucket[uniq]] / 0.1
        for r in range(len(t)):  # only each row's own target column, without its event
            s[r, lab[r]] += (net.pop_bias[net.pop_bucket_target[t[r]]]
                             - net.pop_bias[net.pop_bucket[t[r]]]) / 0.1
        assert float(loss) == pytest.approx(float(F.cross_entropy(s, lab)), rel=1e-5)


def zipf_domain(name: str, n_items: int, seed: int, n_users: int = 160, seq_len: int = 6
                ) -> tuple[Dataset, np.ndarray]:
    """Users draw items by a Zipf popularity (item 0 most popular); the item 'text' is noise, so
    only popularity can rank the next item."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, n_items + 1) ** 1.2
    p /= p.sum()
    order = rng.permutation(n_items)  # popularity is not the item numbering
    rows = []
    for u in range(n_users):
        for k, i in enumerate(order[rng.choice(n_items, size=seq_len, p=p)]):
            rows.append((f"u{u}", f"i{i}", 1_600_000_000 + 86400 * k))
    ev = pl.DataFrame(rows, schema=["user_id", "item_id", "ts"], orient="row").select(
        "user_id", "item_id", pl.from_epoch("ts", "s").dt.replace_time_zone("UTC").alias("timestamp"),
        pl.lit(name).alias("domain"))
    ds = Dataset(ev, pl.DataFrame({"item_id": [f"i{i}" for i in range(n_items)], "domain": name}),
                 name=name)
    return ds, rng.normal(size=(n_items, 12)).astype(np.float32)


def aligned(split, text_by_item: np.ndarray) -> np.ndarray:
    idx = np.array([int(k.split("/", 1)[1][1:]) for k in split.item_map.keys[1:]])
    out = np.zeros((split.n_items + 1, text_by_item.shape[1]), np.float32)
    out[1:] = text_by_item[idx]
    return out


def test_popularity_is_learned_and_carried_to_a_new_domain_by_counts_alone():
    from shiftrec.evaluate.metrics import ranks_from_scores
    from shiftrec.models.transfer_fit import FinetuneConfig

    ds, tb = zipf_domain("a", 60, seed=1)
    split = leave_one_out(ds, max_len=8)
    rec = TransferRec(aligned(split, tb), "fake", TINY,
                      FinetuneConfig(epochs=12, lr=5e-3, batch_size=128, patience=0, threads=1))
    with pytest.raises(ConfigError, match="set the items' training counts"):
        build_net(TINY, aligned(split, tb)).score_all(torch.tensor([[1, 2]]))
    rec.fit(split)
    # a new shop: other items, fresh noise text, other counts; no training, only its counts
    ds2, tb2 = zipf_domain("b", 40, seed=7)
    split2 = leave_one_out(ds2, max_len=8)
    net = rec.net
    net.set_item_text(aligned(split2, tb2))
    assert net.pop_bucket is None  # the old domain's buckets are gone with its items
    net.set_item_popularity(train_item_counts(split2))
    rec.item_text = aligned(split2, tb2)
    hist = [split2.test.history[i] for i in range(len(split2.test))]
    hit = np.mean(ranks_from_scores(rec.score(hist), split2.test.target) <= 10)
    # text is noise, so the same model without the feature ranks the new shop's items at about
    # chance (10 of 40); the carried prior lifts the popular targets (Zipf 1.2 draws)
    plain = TransferRec(aligned(split, tb), "fake", dataclasses.replace(TINY, pop_buckets=0),
                        FinetuneConfig(epochs=12, lr=5e-3, batch_size=128, patience=0, threads=1))
    plain.fit(split)
    plain.net.set_item_text(aligned(split2, tb2))
    plain.item_text = aligned(split2, tb2)
    hit0 = np.mean(ranks_from_scores(plain.score(hist), split2.test.target) <= 10)
    assert hit0 < 0.35 and hit > hit0 + 0.05, (hit, hit0)
    top = net.pop_bucket.cpu().numpy() == TINY.pop_buckets - 1
    with torch.no_grad():
        s = rec.score(hist[:20]).mean(0)
    assert s[1:][top[1:]].mean() > s[1:][~top[1:]].mean()


def test_buckets_travel_with_a_fitted_model_and_new_items_get_bucket_0(tmp_path):
    ds, tb = zipf_domain("a", 30, seed=3, n_users=40)
    split = leave_one_out(ds, max_len=8)
    text = aligned(split, tb)
    net = build_net(TINY, text)
    net.set_item_popularity(train_item_counts(split))
    with torch.no_grad():  # a visible prior: bucket b's logit is b / 10 (cosine units)
        net.pop_bias.copy_(torch.arange(TINY.pop_buckets, dtype=torch.float32) / 10)
    rec = TransferRec(text, "fake", TINY, net=net)
    hist = [np.array([1, 2]), np.array([3])]
    a = rec.score(hist)
    # the prior is in the scores and in the retrieval vectors (score == query @ item)
    b = net.pop_bucket.numpy()
    net.pop_bias.data.zero_()
    np.testing.assert_allclose(a[:, 1:] - rec.score(hist)[:, 1:],
                               np.broadcast_to(b[1:] / 10 / TINY.temperature, (2, split.n_items)),
                               rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        net.pop_bias.copy_(torch.arange(TINY.pop_buckets, dtype=torch.float32) / 10)
    np.testing.assert_allclose(rec.query_vectors(hist) @ rec.item_vectors()[1:].T, a[:, 1:],
                               rtol=1e-4, atol=1e-4)
    rec.save(tmp_path / "m")
    back = TransferRec.load(tmp_path / "m")
    np.testing.assert_array_equal(back.net.pop_bucket.numpy(), net.pop_bucket.numpy())
    np.testing.assert_array_equal(a, back.score(hist))
    back.extend_items(np.ones((2, text.shape[1]), np.float32))
    assert back.net.pop_bucket.numpy()[-2:].tolist() == [0, 0]
    assert back.score(hist).shape == (2, split.n_items + 3)
    # a folder whose item table lost its buckets is refused when loaded strictly
    save_checkpoint(build_net(TINY, text), tmp_path / "bare", encoder="fake", include_items=True)
    with pytest.raises(ArtifactError, match="stores no buckets"):
        load_checkpoint(tmp_path / "bare", strict=True)


def test_zero_shot_and_finetune_pipelines_set_the_targets_counts(tmp_path):
    from shiftrec.pipelines.transfer import FinetuneConfig, finetune, zero_shot

    ds, tb = zipf_domain("a", 30, seed=5, n_users=60)
    split = leave_one_out(ds, max_len=8)
    text = aligned(split, tb)
    pre = build_net(TINY, text)  # a "pretrained" checkpoint: weights only, no item table
    save_checkpoint(pre, tmp_path / "pre", encoder="fake")
    m, ranks = zero_shot(tmp_path / "pre", split, text, "fake", threads=1)
    assert len(ranks) == len(split.test) and 0 <= m["ndcg@10"] <= 1
    net, _ = finetune(tmp_path / "pre", split, text, "fake",
                      FinetuneConfig(epochs=1, batch_size=64, threads=1), tmp_path / "ft")
    np.testing.assert_array_equal(
        net.pop_bucket.numpy(), popularity_buckets(train_item_counts(split), TINY.pop_buckets))
    loaded, _ = load_checkpoint(tmp_path / "ft", strict=True)
    np.testing.assert_array_equal(loaded.pop_bucket.numpy(), net.pop_bucket.numpy())
