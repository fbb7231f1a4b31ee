"""The transferable text-based model: shapes, swapping item tables, checkpoints, bad input."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from shiftrec.data.schema import Dataset
from shiftrec.data.splits import leave_one_out

torch = pytest.importorskip("torch")

from shiftrec.errors import ArtifactError, ConfigError, InputError  # noqa: E402
from shiftrec.models.transfer import (  # noqa: E402
    Freeze,
    Mode,
    Objective,
    TransferConfig,
    TransferRec,
    build_net,
    freeze_prefixes,
    load_checkpoint,
    save_checkpoint,
)

TINY = TransferConfig(hidden=16, n_layers=1, n_heads=2, inner=32, n_experts=2, max_len=8,
                      dropout=0.0, attn_dropout=0.0, adaptor_dropout=0.0, gate_noise=False,
                      temperature=0.1)


def topic_vectors(n_topics: int, dim: int, seed: int = 0) -> np.ndarray:
    """Shared 'semantic' directions: the same topic reads alike in every domain."""
    v = np.random.default_rng(seed).normal(size=(n_topics, dim))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def topic_domain(domain: str, topics: np.ndarray, per_topic: int = 6, n_users: int = 90,
                 seq_len: int = 6, seed: int = 1, noise: float = 0.3
                 ) -> tuple[Dataset, np.ndarray]:
    """Users stay in one topic; item text = its topic's vector + noise (a fake encoder)."""
    rng = np.random.default_rng(seed)
    n_topics, dim = topics.shape
    item_topic = np.repeat(np.arange(n_topics), per_topic)
    rows = []
    for u in range(n_users):
        t = u % n_topics
        pool = np.flatnonzero(item_topic == t)
        seq = rng.choice(pool, size=seq_len, replace=False)
        rows += [(f"u{u}", f"i{i}", 1_600_000_000 + 86400 * k) for k, i in enumerate(seq)]
    ev = pl.DataFrame(rows, schema=["user_id", "item_id", "ts"], orient="row").select(
        "user_id", "item_id", pl.from_epoch("ts", "s").dt.replace_time_zone("UTC").alias("timestamp"),
        pl.lit(domain).alias("domain"))
    ds = Dataset(ev, pl.DataFrame({"item_id": [f"i{i}" for i in range(len(item_topic))],
                                   "domain": domain}), name=domain)
    text_by_item = topics[item_topic] + noise * rng.normal(size=(len(item_topic), dim))
    return ds, text_by_item.astype(np.float32)


def aligned_text(ds: Dataset, split, text_by_item: np.ndarray) -> np.ndarray:
    idx = np.array([int(k.split("/", 1)[1][1:]) for k in split.item_map.keys[1:]])
    out = np.zeros((split.n_items + 1, text_by_item.shape[1]), np.float32)
    out[1:] = text_by_item[idx]
    return out


@pytest.fixture(scope="module")
def tiny_domain():
    topics = topic_vectors(5, 12)
    ds, tb = topic_domain("shop", topics)
    split = leave_one_out(ds, max_len=8)
    return split, aligned_text(ds, split, tb), topics


def test_forward_shapes_both_modes(tiny_domain):
    split, text, _ = tiny_domain
    for mode in Mode:
        net = build_net(TransferConfig(**{**TINY.__dict__, "mode": mode}), text)
        seq = torch.tensor([[0, 0, 3, 4], [1, 2, 3, 4]])
        out = net.score_all(seq)
        assert out.shape == (2, split.n_items + 1)
        assert torch.isinf(out[:, 0]).all() and torch.isfinite(out[:, 1:]).all()
        batch = {"seq": torch.tensor([[1, 2, 3, 0]]), "labels": torch.tensor([[2, 3, 4, 0]])}
        for obj in Objective:
            net.objective = obj
            loss = net.training_loss(batch)
            assert loss.ndim == 0 and torch.isfinite(loss)
            loss.backward()
        assert (net.item_id is not None) == (mode == Mode.TRANSDUCTIVE)


def test_logq_correction_subtracts_log_frequency_of_in_batch_items(tiny_domain):
    """With logq on, the sequence->item term is the cross-entropy of (logits - log q): equal
    counts change nothing (a constant shift), skewed counts change the loss, and a missing
    count table is one clear error."""
    import torch.nn.functional as F

    from shiftrec.errors import ConfigError

    split, text, _ = tiny_domain
    cfg = TransferConfig(**{**TINY.__dict__, "objective": Objective.CONTRASTIVE, "seq_weight": 0.0,
                            "dropout": 0.0, "attn_dropout": 0.0, "adaptor_dropout": 0.0,
                            "gate_noise": False})
    batch = {"seq": torch.tensor([[1, 2, 3, 0], [4, 5, 1, 2]]),
             "labels": torch.tensor([[2, 3, 4, 0], [5, 1, 2, 3]])}
    torch.manual_seed(0)
    plain = build_net(cfg, text).eval()
    corrected = build_net(TransferConfig(**{**cfg.__dict__, "logq": True}), text).eval()
    corrected.load_state_dict(plain.state_dict())
    with pytest.raises(ConfigError, match="set_item_frequency"):
        corrected.training_loss(batch)
    n = split.n_items + 1
    corrected.set_item_frequency(np.full(n, 7.0))
    base = plain.training_loss(batch)
    assert torch.allclose(corrected.training_loss(batch), base, atol=1e-6)
    counts = np.arange(n, dtype=np.float64) ** 2
    corrected.set_item_frequency(counts)
    got = corrected.training_loss(batch)
    seq, tgt = batch["seq"], batch["labels"]
    h = plain.encode(seq)[tgt > 0]
    uniq, inv = torch.unique(tgt[tgt > 0], return_inverse=True)
    log_q = torch.log(torch.tensor((counts + 1) / (counts + 1).sum(), dtype=torch.float32))
    want = F.cross_entropy(plain.logits(h, plain.item_embed(uniq)) - log_q[uniq], inv)
    assert torch.allclose(got, want, atol=1e-5) and not torch.allclose(got, base, atol=1e-3)
    with pytest.raises(InputError, match="non-negative"):
        corrected.set_item_frequency(np.ones(n + 1))
    corrected.set_item_text(text)  # a new item table drops the old counts
    assert corrected.log_q is None


def test_uniform_negatives_come_from_the_batch_domain_and_enter_the_loss(tiny_domain):
    """set_domains splits the table into domains; uniform negatives are drawn from the targets'
    domain (the whole table when the targets span two), never equal a target, and the loss is the
    cross-entropy over the in-batch positives followed by those draws."""
    import torch.nn.functional as F

    from shiftrec.errors import ConfigError

    split, text, _ = tiny_domain
    n = split.n_items
    cfg = TransferConfig(**{**TINY.__dict__, "objective": Objective.CONTRASTIVE, "seq_weight": 0.0,
                            "dropout": 0.0, "attn_dropout": 0.0, "adaptor_dropout": 0.0,
                            "gate_noise": False, "uniform_negatives": 200})
    net = build_net(cfg, text).eval()
    cut = n // 2
    net.set_domains([cut, n - cut])
    torch.manual_seed(0)
    second = net.uniform_negative_ids(torch.tensor([cut + 1, cut + 2]))
    assert len(second) > 100 and int(second.min()) >= cut + 1 and int(second.max()) <= n
    assert not torch.isin(second, torch.tensor([cut + 1, cut + 2])).any()
    first = net.uniform_negative_ids(torch.tensor([1, 2]))
    assert int(first.max()) <= cut and int(first.min()) >= 1
    both = net.uniform_negative_ids(torch.tensor([1, cut + 1]))
    assert int(both.min()) <= cut < int(both.max())  # spans both domains
    with pytest.raises(InputError, match="sum to"):
        net.set_domains([cut, n])
    batch = {"seq": torch.tensor([[1, 2, 3, 0]]), "labels": torch.tensor([[2, 3, 4, 0]])}
    torch.manual_seed(5)
    got = net.training_loss(batch)
    torch.manual_seed(5)
    uniq, inv = torch.unique(torch.tensor([2, 3, 4]), return_inverse=True)
    cols = torch.cat([uniq, net.uniform_negative_ids(uniq)])
    h = net.encode(batch["seq"])[batch["labels"] > 0]
    want = F.cross_entropy(net.logits(h, net.item_embed(cols)), inv)
    assert torch.allclose(got, want, atol=1e-5)
    with pytest.raises(ConfigError, match="logq"):
        build_net(TransferConfig(**{**cfg.__dict__, "logq": True}), text)
    net.set_item_text(text)  # a new item table drops the old domains
    assert net.domain_ends is None


def test_left_and_right_padding_agree(tiny_domain):
    """Positions count items from the first real one: the same history gives the same state."""
    _, text, _ = tiny_domain
    net = build_net(TINY, text).eval()
    with torch.no_grad():
        right = net.encode(torch.tensor([[0, 0, 5, 6, 7]]))[0, -1]
        left = net.encode(torch.tensor([[5, 6, 7, 0, 0]]))[0, 2]
    assert torch.allclose(right, left, atol=1e-5)


def test_freeze_prefixes_cover_named_parts(tiny_domain):
    _, text, _ = tiny_domain
    net = build_net(TINY, text)
    names = [n for n, _ in net.named_parameters()]
    enc = [n for n in names if n.startswith(freeze_prefixes(Freeze.ENCODER))]
    ada = [n for n in names if n.startswith(freeze_prefixes(Freeze.ADAPTOR))]
    assert enc and ada and not set(enc) & set(ada)
    assert set(enc) | set(ada) == set(names)
    assert freeze_prefixes(Freeze.NONE) == ()


def test_inductive_learns_and_scores_a_new_item_set(tiny_domain):
    """Trained on one shop, the text-only model ranks same-topic items first in a brand-new shop
    whose items it never saw (only the text table is swapped)."""
    from shiftrec.models.transfer_fit import FinetuneConfig

    split, text, topics = tiny_domain
    rec = TransferRec(text, "fake", TINY, FinetuneConfig(epochs=15, lr=5e-3, batch_size=128,
                                                         patience=0, threads=1))
    rec.fit(split)
    # planted easy item: in the trained shop the target's topic matches the history's
    hist = [split.test.history[i] for i in range(len(split.test))]
    scores = rec.score(hist)
    from shiftrec.evaluate.metrics import ranks_from_scores

    ranks = ranks_from_scores(scores, split.test.target)
    assert np.mean(ranks <= 6) > 0.6  # 6 items per topic, 30 in all (chance ~0.2)
    # a new item set: same topics, new noise, never trained on
    ds2, tb2 = topic_domain("other", topics, per_topic=5, seq_len=4, seed=9)
    split2 = leave_one_out(ds2, max_len=8)
    text2 = aligned_text(ds2, split2, tb2)
    rec.net.set_item_text(text2)
    s2 = rec.score([split2.test.history[i] for i in range(len(split2.test))])
    assert s2.shape == (len(split2.test), split2.n_items + 1)
    r2 = ranks_from_scores(s2, split2.test.target)
    assert np.mean(r2 <= 5) > 0.5  # 5 items per topic, 25 in all (chance 0.2)


def test_checkpoint_roundtrip_and_mismatch_names_both(tmp_path, tiny_domain):
    _, text, _ = tiny_domain
    net = build_net(TINY, text).eval()
    save_checkpoint(net, tmp_path / "ck", encoder="minilm", include_items=True)
    net2, man = load_checkpoint(tmp_path / "ck")
    assert man["encoder"] == "minilm" and man["text_dim"] == text.shape[1]
    seq = torch.tensor([[0, 1, 2]])
    with torch.no_grad():
        assert torch.allclose(net.score_all(seq)[:, 1:], net2.eval().score_all(seq)[:, 1:], atol=1e-5)
    other = np.zeros((text.shape[0], 512), np.float32)
    other[1:, 0] = 1
    with pytest.raises(ArtifactError) as e:
        load_checkpoint(tmp_path / "ck", other, encoder="use-multilingual")
    msg = str(e.value)
    assert "minilm" in msg and "use-multilingual" in msg and "512" in msg and str(text.shape[1]) in msg
    with pytest.raises(ArtifactError, match="encoder 'minilm'"):
        load_checkpoint(tmp_path / "ck", text, encoder="some-other-model")
    with pytest.raises(ConfigError, match="architecture"):
        load_checkpoint(tmp_path / "ck", overrides={"hidden": 32})


def test_protocol_save_load(tmp_path, tiny_domain):
    from shiftrec.models.base import Recommender

    _, text, _ = tiny_domain
    rec = TransferRec(text, "fake", TINY)
    assert isinstance(rec, Recommender)
    hist = [np.array([1, 2]), np.array([3])]
    with pytest.raises(ArtifactError, match="not fitted"):
        rec.score(hist)
    with pytest.raises(ArtifactError, match="nothing to save"):
        rec.save(tmp_path / "m")
    rec = TransferRec(text, "fake", TINY, net=build_net(TINY, text))  # e.g. a net loaded elsewhere
    a = rec.score(hist)
    rec.save(tmp_path / "m")
    b = TransferRec.load(tmp_path / "m").score(hist)
    np.testing.assert_array_equal(a, b)


def test_strict_load_rejects_tampered_folders(tmp_path, tiny_domain):
    import json

    from safetensors.torch import load_file, save_file

    _, text, _ = tiny_domain
    for mode in Mode:
        cfg = TransferConfig(**{**TINY.__dict__, "mode": mode})
        TransferRec(text, "fake", cfg, net=build_net(cfg, text)).save(tmp_path / mode)
    # an inductive folder whose weights carry an extra item-ID table, and a transductive one
    # without its ID table: the lenient checkpoint loader accepts both, the Protocol load does not
    from tests.models.test_artifacts import rehash

    sd = load_file(str(tmp_path / "transductive" / "model.safetensors"))
    save_file({k: v for k, v in sd.items() if k != "item_id.weight"},
              str(tmp_path / "transductive" / "model.safetensors"))
    with pytest.raises(ArtifactError, match="does not match the manifest"):
        TransferRec.load(tmp_path / "transductive")  # the file hash catches it first
    rehash(tmp_path / "transductive")  # past the hash: the strict load still refuses it
    with pytest.raises(ArtifactError, match="missing"):
        TransferRec.load(tmp_path / "transductive")
    load_checkpoint(tmp_path / "transductive")  # pretrained checkpoints may lack the ID table
    save_file(sd, str(tmp_path / "inductive" / "model.safetensors"))
    rehash(tmp_path / "inductive")
    with pytest.raises(ArtifactError, match="unexpected"):
        TransferRec.load(tmp_path / "inductive")
    man_path = tmp_path / "transductive" / "manifest.json"
    man = json.loads(man_path.read_text())
    man["n_items"] += 1
    man_path.write_text(json.dumps(man))
    with pytest.raises(ArtifactError, match="items"):
        TransferRec.load(tmp_path / "transductive")


def test_registry_entries_both_modes(tmp_path, tiny_domain):
    from shiftrec.models.registry import build_model, load_model
    from shiftrec.text.features import ItemEmbeddings

    split, text, _ = tiny_domain
    for name, mode in (("transfer", Mode.INDUCTIVE), ("transfer-transductive", Mode.TRANSDUCTIVE)):
        rec = build_model(name, hidden=16, n_heads=2)
        assert rec.name == name and rec.config.mode == mode and rec.config.hidden == 16
    with pytest.raises(ConfigError, match="mode is chosen by the model name"):
        build_model("transfer", mode="transductive")
    with pytest.raises(ConfigError, match="unknown key"):
        build_model("transfer", hiden=16)
    with pytest.raises(ConfigError, match="top level"):
        build_model("transfer", train={"dropout": 0.1})
    with pytest.raises(ConfigError, match="unknown key"):
        build_model("transfer", train={"epoch": 1})
    with pytest.raises(ConfigError, match="needs item text embeddings"):
        build_model("transfer").fit(split)
    # item_text may be an ItemEmbeddings folder (as `shiftrec encode` writes): rows are aligned
    # by item key, here from a shuffled order
    perm = np.r_[0, 1 + np.random.default_rng(0).permutation(split.n_items)]
    ItemEmbeddings(split.item_map.keys[perm], text[perm], "fake", "fp").save(tmp_path / "emb")
    tiny = {k: v for k, v in TINY.__dict__.items() if k != "mode"}
    rec = build_model("transfer-transductive", item_text=tmp_path / "emb", **tiny,
                      train={"epochs": 1, "threads": 1, "batch_size": 64, "device": "cpu"}).fit(split)
    np.testing.assert_array_equal(rec.item_text, text)
    assert rec.encoder == "fake"
    rec.save(tmp_path / "m")
    again = load_model(tmp_path / "m")
    assert again.name == "transfer-transductive" and again.encoder == "fake"
    hist = [split.test.history[i] for i in range(5)]
    np.testing.assert_array_equal(rec.score(hist), again.score(hist))
    with pytest.raises(ArtifactError, match="encoder 'fake'"):
        build_model("transfer", item_text=tmp_path / "emb", encoder="minilm").fit(split)


def test_bad_text_tables(tiny_domain):
    _, text, _ = tiny_domain
    with pytest.raises(InputError):
        build_net(TINY, np.zeros((1, 8), np.float32))
    bad = text.copy()
    bad[2, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        build_net(TINY, bad)
    net = build_net(TINY, text)
    with pytest.raises(ArtifactError, match="dim"):
        net.set_item_text(np.ones((5, text.shape[1] + 1), np.float32))


def test_length_sorted_inference_matches_one_pass(tiny_domain):
    """score_all sorts long batches by length and trims padding: same result as one pass."""
    _, text, _ = tiny_domain
    net = build_net(TINY, text).eval()
    rng = np.random.default_rng(0)
    seq = np.zeros((300, 8), np.int64)
    for i in range(300):
        n = rng.integers(1, 9)
        seq[i, 8 - n:] = rng.integers(1, text.shape[0], size=n)
    s = torch.from_numpy(seq)
    with torch.no_grad():
        a = net.user_vectors(s, chunk=64)
        b = net.user_vectors(s, chunk=1000)
    assert torch.allclose(a, b, atol=1e-5)


def test_text_skip_path_adds_the_hand_computed_similarity(tmp_path, tiny_domain):
    """text_skip adds skip_weight * cos(decayed profile of the history's unit texts, item text):
    checked against a hand computation for scoring and for the training loss at every prefix;
    query/item vectors reproduce the scores; a checkpoint without the path fine-tunes with a
    fresh one, a saved model with the path reloads strictly."""
    import torch.nn.functional as F

    split, text, _ = tiny_domain
    torch.manual_seed(0)
    plain = build_net(TINY, text).eval()
    skip = build_net(TransferConfig(**{**TINY.__dict__, "text_skip": True, "skip_init": 3.0,
                                       "skip_decay_init": 0.5}), text).eval()
    missing, unexpected = skip.load_state_dict(plain.state_dict(), strict=False)
    assert set(missing) == {"skip_log_weight", "skip_decay_logit"} and not unexpected
    assert float(skip.skip_weight.detach()) == pytest.approx(3.0)
    assert float(skip.skip_decay.detach()) == pytest.approx(0.5)
    unit = F.normalize(torch.from_numpy(text), dim=-1)
    seq = torch.tensor([[0, 0, 3, 4], [1, 2, 3, 4]])
    with torch.no_grad():
        got = skip.score_all(seq) - plain.score_all(seq)
        # decay 0.5: the last item weighs 1, the one before 0.5, ...
        p0 = F.normalize(0.5 * unit[3] + unit[4], dim=-1)
        p1 = F.normalize(0.125 * unit[1] + 0.25 * unit[2] + 0.5 * unit[3] + unit[4], dim=-1)
        want = 3.0 * torch.stack([p0, p1]) @ unit.T
        assert torch.allclose(got[:, 1:], want[:, 1:], atol=1e-5)
        q = skip.query_vectors(seq)
        v = skip.item_vectors()
        assert torch.allclose((q @ v.T)[:, 1:], skip.score_all(seq)[:, 1:], atol=1e-4)
        # training: the prefix [1, 2] of a left-aligned window gets the same profile as history [1, 2]
        batch = {"seq": torch.tensor([[1, 2, 0, 0]]), "labels": torch.tensor([[0, 3, 0, 0]])}
        h = skip.encode(batch["seq"])[0, 1:2]
        logits = skip.logits(h, skip.item_embed()) + 3.0 * F.normalize(0.5 * unit[1] + unit[2], dim=-1) @ unit.T
        logits[:, 0] = float("-inf")
        want_loss = F.cross_entropy(logits, torch.tensor([3]))
        assert torch.allclose(skip.training_loss(batch), want_loss, atol=1e-5)
    # the weight and the decay are learned
    skip.train()
    skip.training_loss({"seq": torch.tensor([[1, 2, 3, 0]]), "labels": torch.tensor([[2, 3, 4, 0]])}).backward()
    assert skip.skip_log_weight.grad is not None and skip.skip_decay_logit.grad is not None
    # fine-tuning a checkpoint without the path adds a fresh one; strict reload keeps it
    save_checkpoint(plain, tmp_path / "plain", encoder="fake")
    net, _ = load_checkpoint(tmp_path / "plain", text, encoder="fake", overrides={"text_skip": True})
    assert net.cfg.text_skip and float(net.skip_weight.detach()) == net.cfg.skip_init
    with torch.no_grad():
        net.skip_log_weight.fill_(0.01)
    save_checkpoint(net, tmp_path / "skip", encoder="fake", include_items=True)
    again, _ = load_checkpoint(tmp_path / "skip", strict=True)
    assert again.cfg.text_skip and float(again.skip_log_weight.detach()) == pytest.approx(0.01)
    off, _ = load_checkpoint(tmp_path / "skip", text, encoder="fake", overrides={"text_skip": False})
    assert not hasattr(off, "skip_log_weight")


def test_exclude_seen_ranks_outside_the_history_and_the_text_path_grid_grows(tiny_domain):
    """evaluate_net(exclude_seen=True) ranks each target among the items outside the user's
    history (history items other than the target at -inf), select_text_path(exclude_seen=True)
    scores its grid the same way, and the grid doubles its largest weight while that weight is
    the best on validation (at most max_growth times)."""
    from shiftrec.evaluate.metrics import ndcg_at_k, ranks_from_scores
    from shiftrec.pipelines.transfer import evaluate_net, select_text_path

    split, text, _ = tiny_domain
    torch.manual_seed(0)
    net = build_net(TINY, text).eval()
    es = split.test
    hist = [es.history[i][-8:] for i in range(len(es))]
    seq = torch.from_numpy(np.stack([np.pad(h, (8 - len(h), 0)) for h in hist]))
    with torch.no_grad():
        s = net.score_all(seq).numpy()
    masked = s.copy()
    for i, h in enumerate(hist):
        masked[i, [j for j in h if j != es.target[i]]] = -np.inf
    _, plain = evaluate_net(net, split, "test")
    m, ranks = evaluate_net(net, split, "test", exclude_seen=True)
    assert np.array_equal(plain, ranks_from_scores(s, np.asarray(es.target)))
    assert np.array_equal(ranks, ranks_from_scores(masked, np.asarray(es.target)))
    assert m["ndcg@10"] == pytest.approx(ndcg_at_k(ranks, 10)) and (ranks <= plain).all()
    # the grid, ranked outside the history: weight 0 is the net ranked that way on validation
    _, v0 = evaluate_net(net, split, "valid", exclude_seen=True)
    choice = select_text_path(net, split, weights=(0.5,), decays=(0.5,), exclude_seen=True,
                              max_growth=3, transforms=("none",))
    grid = {float(w): g for w, g in choice["grid"]["none, decay 0.5"].items()}
    assert choice["exclude_seen"] and grid[0.0] == pytest.approx(ndcg_at_k(v0, 10))
    ws = sorted(grid)
    assert ws[:2] == [0.0, 0.5] and all(b == 2 * a for a, b in zip(ws[1:], ws[2:], strict=False))
    grown = len(ws) - 2
    assert grown <= 3
    if grown < 3:  # stopped because the largest weight no longer won
        assert grid[ws[-1]] <= max(grid[w] for w in ws[:-1])
    for k in range(grown):  # each doubling was tried because the then-largest weight won
        assert grid[ws[k + 1]] > max(grid[w] for w in ws[:k + 1])
    assert choice["valid_ndcg@10"] == max(grid.values())


def test_text_path_chosen_on_validation_after_training(tmp_path, tiny_domain):
    """select_text_path adds w * cos(text profile, item text) with the (decay, weight) best on
    validation: an untrained net on a domain where users stay in one topic gains from it, the
    scores are base + w * cosine, and finetune(text_path=True) saves a model that reloads
    strictly with the path."""
    from shiftrec.models.textsim import TextSim
    from shiftrec.models.transfer_fit import FinetuneConfig
    from shiftrec.pipelines.transfer import evaluate_net, finetune, select_text_path

    split, text, _ = tiny_domain
    torch.manual_seed(0)
    net = build_net(TINY, text)
    hist = [split.test.history[i] for i in range(6)]
    seq = torch.from_numpy(np.stack([np.pad(h[-8:], (8 - len(h[-8:]), 0)) for h in hist]))
    with torch.no_grad():
        before = net.eval().score_all(seq).numpy()
    choice = select_text_path(net, split, weights=(1.0, 5.0), decays=(0.3, 0.7))
    # 1 or 5, or a doubling of 5 while the largest weight kept winning
    assert choice["weight"] in (1.0, 5.0, 10.0, 20.0, 40.0, 80.0) and choice["decay"] in (0.3, 0.7)
    assert choice["valid_ndcg@10"] > choice["valid_ndcg@10_without"]
    assert choice["valid_ndcg@10"] == max(max(g.values()) for g in choice["grid"].values())
    assert len(choice["grid"]) == 6  # 3 transforms x 2 decays
    cos = TextSim(text, select_decay=(), select_transform=(), transform=choice["transform"],
                  temperature=1.0).fit(split).scores_with_decay(hist, choice["decay"])
    with torch.no_grad():
        after = net.score_all(seq).numpy()
    assert np.allclose(after[:, 1:], before[:, 1:] + choice["weight"] * cos[:, 1:], atol=1e-4)
    with pytest.raises(ConfigError, match="already has a text path"):
        select_text_path(net, split)
    cfg = FinetuneConfig(epochs=1, batch_size=64, threads=1, text_path=True, model=TINY)
    net2, fields = finetune(None, split, text, "fake", cfg, tmp_path / "ft")
    tp = fields["text_path"]
    assert net2.cfg.text_skip == (tp["weight"] > 0)
    if tp["weight"] > 0:
        assert net2.cfg.skip_init == tp["weight"] and net2.cfg.skip_decay_init == tp["decay"]
    both = FinetuneConfig(epochs=1, batch_size=64, threads=1, text_path=True, text_skip=True, model=TINY)
    with pytest.raises(ConfigError, match="already has one"):  # refused before training
        finetune(None, split, text, "fake", both)
    with pytest.raises(ConfigError, match="skip_decay_init in"):
        build_net(TransferConfig(**{**TINY.__dict__, "text_skip": True, "skip_decay_init": 1.5}), text)
    again, man = load_checkpoint(tmp_path / "ft", strict=True)
    assert man["text_path"] == fields["text_path"] and again.cfg.text_skip == net2.cfg.text_skip
    assert evaluate_net(again, split)[0] == evaluate_net(net2, split)[0]


def test_text_path_with_a_transform_scores_the_transformed_cosines_and_reloads(tmp_path, tiny_domain):
    """A text path chosen with a catalogue transform (here whiten, the only one offered) adds
    w * the cosines TextSim computes with that transform; the transform is refitted from the
    stored item table on load, so a saved net scores the same."""
    from shiftrec.models.textsim import TextSim
    from shiftrec.pipelines.transfer import select_text_path
    from shiftrec.text.transform import apply_text_transform

    split, text, _ = tiny_domain
    torch.manual_seed(0)
    far = text + 5.0 * np.abs(text).max()  # a large common component
    far[0] = 0
    net = build_net(TINY, far).eval()
    hist = [split.test.history[i][-8:] for i in range(6)]
    seq = torch.from_numpy(np.stack([np.pad(h, (8 - len(h), 0)) for h in hist]))
    with torch.no_grad():
        before = net.score_all(seq).numpy()
    choice = select_text_path(net, split, weights=(1.0, 5.0), decays=(0.5,), transforms=("whiten",))
    assert choice["weight"] > 0 and choice["transform"] == "whiten" and net.cfg.skip_transform == "whiten"
    cos = TextSim(far, select_decay=(), select_transform=(), transform="whiten",
                  temperature=1.0).fit(split).scores_with_decay(hist, 0.5)
    with torch.no_grad():
        after = net.score_all(seq).numpy()
    assert np.allclose(after[:, 1:], before[:, 1:] + choice["weight"] * cos[:, 1:], atol=1e-4)
    raw = TextSim(far, select_decay=(), select_transform=(), temperature=1.0).fit(split)
    assert not np.allclose(raw.scores_with_decay(hist, 0.5)[:, 1:], cos[:, 1:], atol=1e-3)
    save_checkpoint(net, tmp_path / "w", encoder="fake", include_items=True)
    again, _ = load_checkpoint(tmp_path / "w", strict=True)
    assert again.cfg.skip_transform == "whiten"
    with torch.no_grad():
        assert np.allclose(again.eval().score_all(seq).numpy()[:, 1:], after[:, 1:], atol=1e-5)
    # items appended (serving's extend_items) keep the fitted map: the old items' scores do not
    # move, the new ones get the same map, and a checkpoint saved now reloads it exactly
    fit = net.skip_fit
    new = np.abs(np.random.default_rng(0).normal(size=(3, far.shape[1]))).astype(np.float32) * 9
    net.set_item_text(np.concatenate([far, new]), reset_ids=False)
    assert net.skip_fit is fit
    with torch.no_grad():
        grown = net.score_all(seq).numpy()
    assert np.allclose(grown[:, 1:far.shape[0]], after[:, 1:], atol=1e-5)
    want = apply_text_transform(new, *fit)
    assert np.allclose(net.unit_text().numpy()[-3:], want / np.linalg.norm(want, axis=1, keepdims=True),
                       atol=1e-6)
    save_checkpoint(net, tmp_path / "w2", encoder="fake", include_items=True)
    again, _ = load_checkpoint(tmp_path / "w2", strict=True)
    with torch.no_grad():
        assert np.allclose(again.eval().score_all(seq).numpy(), grown, atol=1e-5)
    # another catalogue (a new domain) gets its own fit
    net.set_item_text(far * 2.0 + 1.0)
    net.unit_text()
    assert net.skip_fit is not fit and not np.allclose(net.skip_fit[0], fit[0])
