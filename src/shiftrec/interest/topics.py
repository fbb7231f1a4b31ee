"""Item topics: category paths where the catalogue has them, otherwise k-means clusters of item
text embeddings (k chosen by silhouette), each named by the distinctive terms of its titles.

Saved as ``topics.npz`` (item keys + topic ids) + ``topics.parquet`` (readable table) +
``topics.json`` (manifest: names, terms, source, config, data fingerprint).
"""

from __future__ import annotations

import enum
import functools
import hashlib
import html
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from shiftrec.config import to_dict
from shiftrec.data.schema import CATEGORY_SEP
from shiftrec.errors import ArtifactError, ConfigError, InputError
from shiftrec.manifest import atomic_dir, make_manifest, read_json, require_complete, write_json

UNCATEGORISED = "(uncategorised)"
TOPICS_NPZ = "topics.npz"
TOPICS_JSON = "topics.json"
TOPICS_PARQUET = "topics.parquet"

Progress = Callable[[int, int], None]  # (done, total)


class TopicSource(enum.StrEnum):
    AUTO = "auto"  # categories when enough items have one, else learned
    CATEGORY = "category"
    LEARNED = "learned"


@dataclass(frozen=True)
class TopicConfig:
    source: TopicSource = TopicSource.AUTO
    category_depth: int = 2  # keep the first N levels of "A > B > C"
    min_category_coverage: float = 0.5  # AUTO uses categories when this share of items has one
    k_grid: tuple[int, ...] = (8, 12, 16, 20, 24, 32)  # candidate numbers of learned topics
    silhouette_sample: int = 3000  # items sampled to score each k
    kmeans_iters: int = 40
    kmeans_restarts: int = 1
    n_terms: int = 5  # distinctive terms kept per topic (the name uses the first 3)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.category_depth < 1:
            raise ConfigError(f"topics: category_depth must be >= 1, got {self.category_depth}")
        if not self.k_grid or min(self.k_grid) < 2:
            raise ConfigError(f"topics: k_grid needs values >= 2, got {list(self.k_grid)}")


@dataclass
class Topics:
    """A topic id for every catalogue item (keys "domain/item_id"), with names and terms."""

    keys: np.ndarray  # object array of "domain/item_id"
    topic: np.ndarray  # int64 topic id per key, 0..n_topics-1
    names: list[str]
    terms: list[list[str]]
    source: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_topics(self) -> int:
        return len(self.names)

    def sizes(self) -> np.ndarray:
        return np.bincount(self.topic, minlength=self.n_topics)

    def table(self) -> pl.DataFrame:
        parts = [k.split("/", 1) for k in self.keys]
        return pl.DataFrame({
            "domain": [p[0] for p in parts], "item_id": [p[1] for p in parts],
            "topic": self.topic.astype(np.int64),
            "topic_name": np.asarray(self.names, dtype=object)[self.topic] if len(self.topic)
            else np.zeros(0, dtype=object)},
            schema={"domain": pl.String, "item_id": pl.String, "topic": pl.Int64,
                    "topic_name": pl.String})

    def lookup(self, domain: pl.Series | Sequence[str], item_id: pl.Series | Sequence[str]) -> np.ndarray:
        """Topic id of each (domain, item_id); -1 where the item has no topic."""
        q = pl.DataFrame({"domain": pl.Series(domain, dtype=pl.String),
                          "item_id": pl.Series(item_id, dtype=pl.String)})
        t = self.table().select("domain", "item_id", "topic")
        out = q.join(t, on=["domain", "item_id"], how="left", maintain_order="left")["topic"]
        return out.fill_null(-1).to_numpy().astype(np.int64)

    def aligned(self, item_map: Any) -> np.ndarray:
        """Topic per dense item index of an IdMap (len(item_map)); -1 for padding and unknown."""
        fr = item_map.frame()
        out = np.full(len(item_map), -1, dtype=np.int64)
        if fr.height:
            out[fr["idx"].to_numpy()] = self.lookup(fr["domain"], fr["item_id"])
        return out

    def save(self, out_dir: str | Path, data_fingerprint: str | None = None,
             config: dict[str, Any] | None = None) -> Path:
        out = Path(out_dir)
        with atomic_dir(out) as tmp:
            np.savez_compressed(tmp / TOPICS_NPZ, keys=self.keys.astype(str),
                                topic=self.topic.astype(np.int64))
            self.table().write_parquet(tmp / TOPICS_PARQUET)
            write_json(tmp / TOPICS_JSON, make_manifest(
                "topics", source=self.source, n_topics=self.n_topics, n_items=len(self.keys),
                names=self.names, terms=self.terms, sizes=self.sizes().tolist(),
                data_fingerprint=data_fingerprint, config=config, meta=self.meta))
        return out

    @classmethod
    def load(cls, path: str | Path) -> Topics:
        p = Path(path)
        if not (p / TOPICS_JSON).is_file() or not (p / TOPICS_NPZ).is_file():
            raise ArtifactError(f"not a topics folder ({TOPICS_JSON} or {TOPICS_NPZ} missing)", path=p)
        require_complete(p, "topics folder")
        man = read_json(p / TOPICS_JSON)
        if man.get("kind") != "topics":
            raise ArtifactError(f"manifest kind is '{man.get('kind')}', expected 'topics'", path=p / TOPICS_JSON)
        z = np.load(p / TOPICS_NPZ, allow_pickle=False)
        keys, topic = z["keys"].astype(object), z["topic"].astype(np.int64)
        names = list(man["names"])
        if len(keys) != len(topic) or (len(topic) and (topic.min() < 0 or topic.max() >= len(names))):
            raise ArtifactError("topic ids do not match the manifest's topic names", path=p / TOPICS_NPZ)
        return cls(keys, topic, names, [list(t) for t in man.get("terms", [])], man["source"],
                   man.get("meta", {}))


# ---------------------------------------------------------------- text helpers

_TOKEN = re.compile(r"[a-z][a-z0-9'\-]*[a-z0-9]|[a-z]")
STOPWORDS = frozenset("""a an and are as at be by for from has have in is it its of on or that the this
to was were will with set pack pcs piece pieces new x inch inches cm mm size sizes assorted
design designs style with without your our you de la le les et pour one two three four five six
small large big mini medium colour color colours colors kit box lot""".split())


# Chinese (CJK ideographs) have no spaces between words. Runs of them are cut into words with
# jieba (dictionary-based, pure Python, its dictionary ships in the wheel: no download), so a
# topic is named by real words such as 无线耳机 or 精华液; character bigrams, the fallback when
# jieba is not installed, would also yield fragments across word boundaries (师刀, 刀白).
_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
CJK_STOPWORDS = frozenset("""的 和 与 及 或 系列 来自 款式 新款 包邮 正品 一个 一款 我们 你们 套装 规格""".split())


@functools.lru_cache(maxsize=1)
def _jieba() -> Any:
    try:
        import jieba
    except ImportError:  # pragma: no cover - jieba is a dependency; bigrams keep working without it
        return None
    jieba.setLogLevel(logging.WARNING)
    return jieba


def cjk_words(run: str) -> list[str]:
    """Words of >= 2 characters in a run of CJK ideographs (jieba; character bigrams without it)."""
    jb = _jieba()
    words = jb.lcut(run) if jb is not None else [run[i:i + 2] for i in range(len(run) - 1)]
    return [w for w in words if len(w) >= 2 and w not in CJK_STOPWORDS]


def tokenize(text: str | None) -> list[str]:
    """Lower-cased word tokens of >= 3 characters, without stopwords or pure numbers; Chinese
    runs give their words of >= 2 characters (see `cjk_words`)."""
    if not text:
        return []
    text = html.unescape(html.unescape(text)).lower()
    toks = _TOKEN.findall(text)
    out = [t.strip("'-") for t in toks if len(t) >= 3 and t not in STOPWORDS and not t.isdigit()]
    for run in _CJK_RUN.findall(text):
        out += cjk_words(run)
    return out


def _doc_term(texts: Sequence[str], min_df: int = 1) -> tuple[Any, list[str]]:
    """Sparse (n_docs, vocab) term-count matrix (CSR) and the vocabulary."""
    import scipy.sparse as sp

    vocab: dict[str, int] = {}
    rows, cols = [], []
    for i, t in enumerate(texts):
        for tok in tokenize(t):
            j = vocab.setdefault(tok, len(vocab))
            rows.append(i)
            cols.append(j)
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                      shape=(len(texts), len(vocab)), dtype=np.float32)
    m.sum_duplicates()
    words = list(vocab)
    if min_df > 1 and len(words):
        df = np.asarray((m > 0).sum(axis=0)).ravel()
        keep = np.flatnonzero(df >= min_df)
        m = m[:, keep]
        words = [words[j] for j in keep]
    return m, words


def tfidf_svd(texts: Sequence[str], dim: int = 64, min_df: int = 2, seed: int = 0) -> np.ndarray:
    """A quick text embedding: sublinear TF-IDF of title words, truncated SVD, L2-normalised rows.

    Deterministic for a given seed; (n, dim) float32 (dim is capped by the vocabulary size).
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import svds

    n = len(texts)
    if n == 0:
        return np.zeros((0, dim), np.float32)
    m, words = _doc_term(texts, min_df=min_df)
    if m.shape[1] < 2:
        return np.zeros((n, max(1, min(dim, m.shape[1]))), np.float32)
    m.data = 1.0 + np.log(m.data)
    df = np.asarray((m > 0).sum(axis=0)).ravel()
    idf = np.log((1 + n) / (1 + df)) + 1.0
    m = m @ sp.diags(idf.astype(np.float32))
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    m = sp.diags(1.0 / np.maximum(norms, 1e-12)) @ m
    k = int(min(dim, min(m.shape) - 1))
    v0 = np.random.default_rng(seed).standard_normal(min(m.shape))
    u, s, _ = svds(m.astype(np.float64), k=k, v0=v0)
    order = np.argsort(-s)
    x = (u[:, order] * s[order]).astype(np.float32)
    # deterministic sign: make each component's largest-magnitude entry positive
    sign = np.sign(x[np.abs(x).argmax(axis=0), np.arange(x.shape[1])])
    x *= np.where(sign == 0, 1, sign)
    return _l2(x)


def _l2(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


# ---------------------------------------------------------------- clustering

def kmeans(x: np.ndarray, k: int, seed: int = 0, iters: int = 40, restarts: int = 1
           ) -> tuple[np.ndarray, np.ndarray, float]:
    """Lloyd's k-means with k-means++ seeding (numpy). Returns (labels, centers, inertia)."""
    import scipy.sparse as sp

    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    if n == 0:
        raise InputError("cannot cluster: no item embeddings")
    k = int(min(k, n))
    rng = np.random.default_rng(seed)
    sq = (x * x).sum(1)
    best: tuple[np.ndarray, np.ndarray, float] | None = None
    for _ in range(max(1, restarts)):
        centers = np.empty((k, x.shape[1]), np.float32)
        centers[0] = x[rng.integers(n)]
        d2 = np.maximum(sq - 2 * x @ centers[0] + centers[0] @ centers[0], 0)
        for c in range(1, k):
            tot = d2.sum()
            j = int(rng.choice(n, p=d2 / tot)) if tot > 0 else int(rng.integers(n))
            centers[c] = x[j]
            d2 = np.minimum(d2, np.maximum(sq - 2 * x @ centers[c] + centers[c] @ centers[c], 0))
        labels = np.zeros(n, np.int64)
        for it in range(iters):
            dist = sq[:, None] - 2 * x @ centers.T + (centers * centers).sum(1)[None, :]
            new = dist.argmin(1)
            if it and np.array_equal(new, labels):
                break
            labels = new
            counts = np.bincount(labels, minlength=k)
            sums = np.asarray(sp.csr_matrix((np.ones(n, np.float32), (labels, np.arange(n))),
                                            shape=(k, n)) @ x)
            empty = counts == 0
            centers[~empty] = sums[~empty] / counts[~empty, None]
            if empty.any():  # re-seed empty clusters with the worst-fitted points
                far = np.argsort(-dist[np.arange(n), labels])[: int(empty.sum())]
                centers[empty] = x[far]
        dist = sq[:, None] - 2 * x @ centers.T + (centers * centers).sum(1)[None, :]
        labels = dist.argmin(1)
        inertia = float(np.maximum(dist[np.arange(n), labels], 0).sum())
        if best is None or inertia < best[2]:
            best = (labels, centers.copy(), inertia)
    assert best is not None
    return best


def silhouette(x: np.ndarray, labels: np.ndarray, sample: int = 3000, seed: int = 0) -> float:
    """Mean silhouette (cosine distance) on a random sample of rows."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(x), size=min(sample, len(x)), replace=False) if len(x) > sample \
        else np.arange(len(x))
    xs, ls = _l2(np.asarray(x)[idx]), labels[idx]
    uniq, ls = np.unique(ls, return_inverse=True)
    if len(uniq) < 2:
        return -1.0
    d = 1.0 - xs @ xs.T
    onehot = np.zeros((len(ls), len(uniq)), np.float32)
    onehot[np.arange(len(ls)), ls] = 1
    sums = d @ onehot
    cnt = onehot.sum(0)
    own = cnt[ls] - 1
    a = np.where(own > 0, sums[np.arange(len(ls)), ls] / np.maximum(own, 1), 0.0)
    other = sums / np.maximum(cnt, 1)[None, :]
    other[np.arange(len(ls)), ls] = np.inf
    other[:, cnt == 0] = np.inf
    b = other.min(1)
    s = np.where(own > 0, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
    return float(s.mean())


def choose_k(x: np.ndarray, cfg: TopicConfig, progress: Progress | None = None
             ) -> tuple[int, np.ndarray, dict[int, float]]:
    """Cluster for each k in cfg.k_grid (capped at n/5) and keep the best silhouette."""
    n = len(x)
    grid = sorted({min(k, max(2, n // 5)) for k in cfg.k_grid})
    scores: dict[int, float] = {}
    best_k, best_labels, best_s = grid[0], None, -np.inf
    for i, k in enumerate(grid):
        labels, _, _ = kmeans(x, k, seed=cfg.seed + k, iters=cfg.kmeans_iters, restarts=cfg.kmeans_restarts)
        s = silhouette(x, labels, cfg.silhouette_sample, cfg.seed)
        scores[k] = round(s, 5)
        if s > best_s:
            best_k, best_labels, best_s = k, labels, s
        if progress is not None:
            progress(i + 1, len(grid))
    assert best_labels is not None
    return best_k, best_labels, scores


def distinctive_terms(texts: Sequence[str], labels: np.ndarray, n_topics: int, n_terms: int = 5
                      ) -> list[list[str]]:
    """Per topic, title words frequent inside it and rare outside: p_in * log(p_in / p_out)."""
    m, words = _doc_term(texts)
    if not words:
        return [[] for _ in range(n_topics)]
    b = (m > 0).astype(np.float32)
    onehot = np.zeros((len(labels), n_topics), np.float32)
    onehot[np.arange(len(labels)), labels] = 1
    inside = np.asarray((b.T @ onehot).T)  # (topics, vocab) doc counts
    n_in = onehot.sum(0)[:, None]
    total = inside.sum(0, keepdims=True)
    n_out = len(labels) - n_in
    p_in = inside / np.maximum(n_in, 1)
    p_out = (total - inside) / np.maximum(n_out, 1)
    score = p_in * np.log((p_in + 1e-3) / (p_out + 1e-3))
    score[inside < 2] = -np.inf  # a term must occur in at least two titles of the topic
    out = []
    for t in range(n_topics):
        order = np.argsort(-score[t], kind="stable")[:n_terms]
        out.append([words[j] for j in order if np.isfinite(score[t, j]) and score[t, j] > 0])
    return out


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n} #{seen[n]}")
    return out


# ---------------------------------------------------------------- builders

def _keys(items: pl.DataFrame) -> np.ndarray:
    return items.select((pl.col("domain") + "/" + pl.col("item_id")).alias("k"))["k"].to_numpy().astype(object)


def _titles(items: pl.DataFrame) -> list[str]:
    cols = [c for c in ("title", "description") if c in items.columns]
    if not cols:
        return [""] * items.height
    expr = pl.coalesce([pl.col(c).cast(pl.String) for c in cols]).fill_null("")
    return items.select(expr.alias("t"))["t"].to_list()


def category_coverage(items: pl.DataFrame) -> float:
    if items.height == 0 or "category" not in items.columns:
        return 0.0
    c = items["category"].cast(pl.String)
    return float((c.is_not_null() & (c.str.strip_chars() != "")).sum()) / items.height


def category_topics(items: pl.DataFrame, depth: int = 2, n_terms: int = 5) -> Topics:
    """One topic per distinct category path cut to `depth` levels; missing -> '(uncategorised)'."""
    if items.height == 0:
        raise InputError("no catalogue items to assign topics to")
    cat = items["category"].cast(pl.String).fill_null("").to_list() if "category" in items.columns \
        else [""] * items.height
    paths = []
    for c in cat:
        parts = [p.strip() for p in c.split(CATEGORY_SEP.strip()) if p.strip()]
        paths.append(CATEGORY_SEP.join(parts[:depth]) if parts else UNCATEGORISED)
    names = sorted(set(paths), key=lambda s: (s == UNCATEGORISED, s))
    pos = {n: i for i, n in enumerate(names)}
    topic = np.array([pos[p] for p in paths], dtype=np.int64)
    terms = distinctive_terms(_titles(items), topic, len(names), n_terms)
    return Topics(_keys(items), topic, names, terms, TopicSource.CATEGORY.value,
                  meta={"category_depth": depth})


def learned_topics(items: pl.DataFrame, embeddings: np.ndarray, cfg: TopicConfig = TopicConfig(),
                   progress: Progress | None = None, encoder: str = "unknown") -> Topics:
    """k-means topics on `embeddings` (one row per row of `items`), k chosen by silhouette."""
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim != 2 or len(emb) != items.height:
        raise InputError(f"embeddings have shape {emb.shape}; expected ({items.height}, dim), "
                         f"one row per catalogue item")
    if items.height < 4:
        raise InputError(f"too few items ({items.height}) to learn topics; need at least 4")
    x = _l2(emb)
    k, labels, scores = choose_k(x, cfg, progress)
    # renumber topics by size (largest first) so ids are stable and readable
    sizes = np.bincount(labels, minlength=k)
    order = np.argsort(-sizes, kind="stable")
    remap = np.empty(k, np.int64)
    remap[order] = np.arange(k)
    labels = remap[labels]
    titles = _titles(items)
    terms = distinctive_terms(titles, labels, k, cfg.n_terms)
    names = _unique_names([" / ".join(t[:3]) if t else f"topic {i}" for i, t in enumerate(terms)])
    return Topics(_keys(items), labels, names, terms, TopicSource.LEARNED.value,
                  meta={"k": k, "silhouette": scores, "encoder": encoder})


def build_topics(items: pl.DataFrame, cfg: TopicConfig = TopicConfig(),
                 embeddings: np.ndarray | None = None, progress: Progress | None = None,
                 encoder: str = "unknown") -> Topics:
    """Categories where present (AUTO: coverage >= cfg.min_category_coverage), else learned topics.

    Learned topics need `embeddings` (one row per item row); see `tfidf_svd` for a quick one.
    """
    if items.height == 0:
        raise InputError("no catalogue items to assign topics to")
    src = cfg.source
    if src == TopicSource.AUTO:
        src = TopicSource.CATEGORY if category_coverage(items) >= cfg.min_category_coverage \
            else TopicSource.LEARNED
    if src == TopicSource.CATEGORY:
        if category_coverage(items) == 0:
            raise InputError("no item has a category; use learned topics (source=learned)")
        return category_topics(items, cfg.category_depth, cfg.n_terms)
    if embeddings is None:
        raise ConfigError("learned topics need an item embedding matrix (one row per item)")
    return learned_topics(items, embeddings, cfg, progress, encoder)


def items_fingerprint(items: pl.DataFrame) -> str:
    h = hashlib.sha256()
    for c in ("domain", "item_id", "title", "category"):
        if c in items.columns:
            h.update("\x1f".join(items[c].cast(pl.String).fill_null("").to_list()).encode())
    return h.hexdigest()[:32]


def save_topics(topics: Topics, out_dir: str | Path, items: pl.DataFrame | None = None,
                cfg: TopicConfig | None = None) -> Path:
    return topics.save(out_dir, data_fingerprint=None if items is None else items_fingerprint(items),
                       config=None if cfg is None else to_dict(cfg))


def embed_items(items: pl.DataFrame, encoder: str = "tfidf", cache_dir: str | Path | None = None,
                progress: Progress | None = None, dim: int = 64) -> tuple[np.ndarray, str]:
    """Embeddings of item titles for learned topics: 'tfidf' (TF-IDF + SVD, fast, no model) or
    any shiftrec.text encoder name / model folder (e.g. 'minilm'). Returns (matrix, encoder id)."""
    texts = _titles(items)
    if encoder == "tfidf":
        return tfidf_svd(texts, dim=dim), f"tfidf-svd{dim}"
    from shiftrec.text.cache import encode_texts
    from shiftrec.text.encoders import load_encoder

    enc = load_encoder(encoder)
    vec, _ = encode_texts(texts, enc, cache_dir=cache_dir, progress=progress)
    return vec, getattr(enc, "name", encoder)


def embeddings_for_items(items: pl.DataFrame, folder: str | Path) -> tuple[np.ndarray, str]:
    """Rows of a saved item-embeddings folder (`shiftrec encode`) in the order of `items`."""
    from shiftrec.data.splits import IdMap
    from shiftrec.text.features import ItemEmbeddings

    emb = ItemEmbeddings.load(folder)
    return emb.aligned(IdMap.from_frame(items))[1:], emb.encoder
