"""Learned topics: clusters of the item tower's vectors, named from their members' words, with
ids that persist from one trained version to the next.

Why learn them when ``reelrank.topics`` already reads a topic off each video? An app that sends
no hashtags gets no topic at all there, and one that sends noisy hashtags gets noisy topics. The
retrieval model's item vectors blend the video's content (creator, sound, hashtags, caption
words, length) with what viewers did with it, so videos watched by the same people land close
together whatever their tags say.

1. **Clusters.** Vectors are L2-normalised and clustered by spherical k-means (faiss). The
   number of topics is chosen from the data: the mean silhouette (cosine) of a sample is
   computed for a few values between ``min_topics`` and ``max_topics`` and the best is kept;
   when a previous version exists its number of topics is kept unless another beats it by
   ``keep_k_margin`` (a retrain should not reshuffle topics over a silhouette change of 0.001).
2. **Names.** A class-based TF-IDF over the members' hashtags and caption words (the idea of
   BERTopic's c-TF-IDF: one document per topic, term frequency within the topic times the log
   of how rare the term is over all topics) gives each topic its top terms, joined as
   ``"cooking · recipe · pasta"``.
3. **Ids that persist.** A new version's clusters are matched to the previous version's by
   member overlap (Jaccard of the videos in each, with the previous version's topic of every
   current video), the centroids' cosine as a tie-break, with the Hungarian algorithm.
   k-means itself starts from the previous topics' members (their mean in the new vector
   space), so a retrain on similar data lands on similar clusters. A matched topic keeps its id
   and its name (unless its top terms changed); topics that split, merge, appear or fade are
   recorded in ``changes``.
4. **At upload.** A new video's vector comes from its content alone (its id is not in the
   model's tables yet); its topic is the nearest centroid (``TopicModel.assign``).

Pure NumPy and faiss: no store, no registry, no torch here (``reelrank.train.topics`` computes
the vectors and stores the result with a version).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

from reelrank.clustering import choose_k, kmeans, min_cost_assignment, unit
from reelrank.topics import GENERIC_TAGS
from reelrank.types import Item

LEARNED_PREFIX = "learned:"  # a learned topic's key beside attribute and hashtag topics
_WORD = re.compile(r"[a-z0-9\u00c0-\uffff][a-z0-9_:\u00c0-\uffff]*")
# Words that say nothing about a video's subject (caption filler, in the languages the synthetic
# world and most demo catalogs use); names are built from what is left.
STOPWORDS = frozenset("""
a an and are as at be but by for from has have how i in is it its just me my no not of on or
our so that the this to too up was we what when who why will with you your pov wait part day
try need watch video new like follow omg lol de la el en y que le les des un une et du der die
das und ist""".split())


@dataclass
class TopicConfig:
    min_topics: int = 8
    max_topics: int = 64
    candidates: int = 7  # values of k tried between the bounds (geometric steps)
    sample: int = 2000  # vectors the silhouette is measured on
    niter: int = 25
    seed: int = 0
    warm_start: bool = True  # k-means starts from the previous topics' members
    keep_k_margin: float = 0.01  # silhouette another k must gain over the previous version's k
    min_overlap: float = 0.2  # Jaccard below which a new cluster does not inherit an old id
    # A video keeps its previous topic while that topic's centroid is within this cosine of
    # its nearest one: a retrain's noise moves videos near a border, not what they are about.
    keep_margin: float = 0.02
    split_share: float = 0.25  # share of an old topic that must go to each part of a split
    merge_share: float = 0.5  # share of each old topic that must go into a merged one
    terms_per_name: int = 3
    keep_name_terms: int = 2  # a matched topic keeps its name while this many of its terms
    name_pool: int = 8  # ... are among its new top terms


@dataclass
class Topic:
    id: int
    name: str
    terms: list[str]
    size: int

    @property
    def key(self) -> str:
        return f"{LEARNED_PREFIX}{self.id}"


@dataclass
class TopicModel:
    """Topics in centroid row order. ``changes``: what matching found against the version
    before (``{"kept": [...], "renamed": [...], "split": [...], "merged": [...],
    "appeared": [...], "faded": [...]}``)."""

    topics: list[Topic]
    centroids: np.ndarray  # (K, D) float32, unit rows
    next_id: int
    silhouette: dict[int, float] = field(default_factory=dict)  # k tried -> mean silhouette
    changes: dict = field(default_factory=dict)
    # Videos that kept their previous topic although another centroid is nearer (``keep_margin``):
    # item id -> topic id, applied over the nearest-centroid assignment by ``labels``.
    kept: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._ids = np.array([t.id for t in self.topics], dtype=np.int64)
        self._by_id = {t.id: t for t in self.topics}

    def __len__(self) -> int:
        return len(self.topics)

    def get(self, topic_id: int) -> Topic | None:
        return self._by_id.get(topic_id)

    def assign(self, vectors: np.ndarray) -> np.ndarray:
        """(N, D) vectors (any norm) -> (N,) topic ids: the nearest centroid by cosine."""
        if not len(self.topics) or not len(vectors):
            return np.full(len(vectors), -1, dtype=np.int64)
        return self._ids[np.argmax(unit(vectors) @ self.centroids.T, axis=1)]

    def labels(self, vectors: np.ndarray, rows: Mapping[str, int]) -> np.ndarray:
        """The topic id of each video (``rows``: item id -> its row of ``vectors``): ``assign``,
        then the videos that kept their topic (a walk over those few, not the catalog)."""
        out = self.assign(vectors)
        for item_id, topic in self.kept.items():
            r = rows.get(item_id)
            if r is not None and r < len(out):
                out[r] = topic
        return out

    def to_meta(self) -> dict:
        """Plain JSON for a version's meta.json (centroids rounded to 5 decimals)."""
        return {"format": 1, "next_id": self.next_id,
                "topics": [{"id": t.id, "name": t.name, "terms": t.terms, "size": t.size}
                           for t in self.topics],
                "centroids": np.round(self.centroids.astype(np.float64), 5).tolist(),
                "silhouette": {str(k): round(v, 4) for k, v in self.silhouette.items()},
                "changes": self.changes, "kept": self.kept}

    @classmethod
    def from_meta(cls, meta: dict) -> "TopicModel":
        topics = [Topic(int(t["id"]), str(t["name"]), list(t["terms"]), int(t["size"]))
                  for t in meta["topics"]]
        centroids = np.asarray(meta["centroids"], dtype=np.float32).reshape(len(topics), -1)
        return cls(topics, unit(centroids), int(meta["next_id"]),
                   {int(k): float(v) for k, v in meta.get("silhouette", {}).items()},
                   dict(meta.get("changes", {})),
                   {str(k): int(v) for k, v in meta.get("kept", {}).items()})


# -- terms and names ------------------------------------------------------------------------------
def item_terms(item: Item) -> set[str]:
    """The words a topic may be named by: hashtags (not generic reach tags) and caption words."""
    terms = {t.lower().lstrip("#") for t in item.hashtags}
    terms |= set(_WORD.findall((item.caption or "").lower()))
    return {t for t in terms if len(t) > 1 and t not in GENERIC_TAGS and t not in STOPWORDS
            and not t.isdigit()}


def ctfidf(labels: np.ndarray, docs: Sequence[Iterable[str]], n_topics: int,
           ) -> tuple[list[str], np.ndarray]:
    """Class-based TF-IDF: (terms, (n_topics, T) weights). Each topic is one document made of
    its members' terms (each counted once per video); a term's weight in a topic is its share
    of the topic's terms times log(1 + A / f), A the mean number of terms per topic and f the
    term's count over all topics."""
    vocab: dict[str, int] = {}
    rows, cols = [], []
    for label, terms in zip(labels.tolist(), docs):
        if label < 0:
            continue
        for t in terms:
            rows.append(label)
            cols.append(vocab.setdefault(t, len(vocab)))
    tf = np.zeros((n_topics, len(vocab)))
    if rows:
        np.add.at(tf, (np.array(rows), np.array(cols)), 1.0)
    per_topic = tf.sum(axis=1, keepdims=True)
    f = tf.sum(axis=0)
    avg = per_topic.mean() if n_topics else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        weights = np.where(per_topic > 0, tf / np.maximum(per_topic, 1), 0.0) * np.log1p(
            avg / np.maximum(f, 1))[None, :]
    return list(vocab), weights


def top_terms(weights: np.ndarray, terms: list[str], counts: np.ndarray | None, size: int,
              n: int) -> list[str]:
    """The ``n`` heaviest terms of one topic that at least two of its videos (or 5%) carry."""
    if not terms:
        return []
    order = np.argsort(-weights, kind="stable")
    floor = max(2, math.ceil(0.05 * size)) if size >= 2 else 1
    out = []
    for j in order.tolist():
        if weights[j] <= 0 or len(out) >= n:
            break
        if counts is not None and counts[j] < floor:
            continue
        out.append(terms[j])
    return out


def _name(terms: list[str], topic_id: int) -> str:
    return " · ".join(terms) if terms else f"topic {topic_id}"


def fit_topics(vectors: np.ndarray, items: Sequence[Item], cfg: TopicConfig | None = None,
               previous: TopicModel | None = None,
               previous_labels: np.ndarray | None = None) -> tuple[TopicModel, np.ndarray]:
    """Learn topics over ``items`` (row order of ``vectors``); returns the model and each
    item's topic id. ``previous`` and ``previous_labels`` (each item's topic id under the
    previous version, -1 where it had none) make ids, names and the start of k-means follow
    that version."""
    cfg = cfg or TopicConfig()
    x = unit(vectors)
    n = len(x)
    if n == 0:
        return TopicModel([], np.zeros((0, x.shape[1] if x.ndim == 2 else 0), np.float32),
                          previous.next_id if previous else 0), np.zeros(0, np.int64)
    has_prev = previous is not None and previous_labels is not None and len(previous)
    prev_k = len(previous) if has_prev else None
    k, scores = choose_k(x, cfg, prev_k)
    init = _warm_start(x, previous_labels, k, cfg.seed) if has_prev and cfg.warm_start else None
    centroids = (kmeans(x, k, cfg.seed, cfg.niter, init, nredo=3) if k > 1
                 else unit(x.mean(0, keepdims=True)))
    rows = np.argmax(x @ centroids.T, axis=1)
    used = np.unique(rows)  # k-means may leave a centroid with no member: drop it
    centroids = centroids[used]
    rows = np.searchsorted(used, rows)
    nearest = rows
    if has_prev and cfg.keep_margin > 0:
        rows = _keep_previous(x, rows, centroids, previous, previous_labels, cfg)
    docs = [item_terms(it) for it in items]
    terms, weights = ctfidf(rows, docs, len(used))
    counts = _term_counts(rows, docs, terms, len(used))
    sizes = np.bincount(rows, minlength=len(used))
    fresh_terms = [top_terms(weights[r], terms, counts[r], int(sizes[r]), cfg.name_pool)
                   for r in range(len(used))]
    if has_prev:
        ids, names, changes, next_id = _match(x, rows, centroids, previous, previous_labels,
                                              fresh_terms, cfg)
    else:
        ids = list(range(len(used)))
        names = [None] * len(used)
        changes = {"appeared": ids[:]}
        next_id = len(used)
    topics = []
    for r in range(len(used)):
        own = fresh_terms[r][:cfg.terms_per_name]
        topics.append(Topic(ids[r], names[r] or _name(own, ids[r]), own, int(sizes[r])))
    _unique_names(topics, fresh_terms, cfg.terms_per_name)
    moved = np.flatnonzero(rows != nearest)
    kept = {items[r].item_id: ids[rows[r]] for r in moved.tolist()}
    model = TopicModel(topics, centroids, next_id, scores, changes, kept)
    return model, model._ids[rows]


def _term_counts(rows: np.ndarray, docs, terms: list[str], k: int) -> np.ndarray:
    index = {t: j for j, t in enumerate(terms)}
    counts = np.zeros((k, len(terms)))
    for r, doc in zip(rows.tolist(), docs):
        for t in doc:
            counts[r, index[t]] += 1
    return counts


def _warm_start(x: np.ndarray, previous_labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """(k, D) starting centroids: the previous topics' members' mean in this vector space,
    largest topics first, then random videos for any extra clusters."""
    known = previous_labels >= 0
    ids, counts = np.unique(previous_labels[known], return_counts=True)
    order = ids[np.argsort(-counts, kind="stable")][:k]
    init = [x[previous_labels == t].mean(axis=0) for t in order]
    rng = np.random.default_rng(seed)
    extra = rng.choice(len(x), size=k - len(init), replace=len(x) < k - len(init)) \
        if len(init) < k else []
    init += [x[j] for j in extra]
    return unit(np.stack(init))


def _keep_previous(x, rows, centroids, previous: TopicModel, previous_labels,
                   cfg: TopicConfig) -> np.ndarray:
    """Rows after the ``keep_margin`` rule: the new cluster each previous topic passes to (as
    matching would give its id, on the nearest-centroid rows) keeps the videos it had whose
    cosine to it is within the margin of their nearest centroid."""
    ids = _match(x, rows, centroids, previous, previous_labels, [[]] * len(centroids), cfg)[0]
    row_of = {topic: r for r, topic in enumerate(ids)}
    before = np.array([row_of.get(int(t), -1) for t in previous_labels.tolist()])
    sims = x @ centroids.T  # (N, K)
    has = np.flatnonzero(before >= 0)
    near = sims[has, before[has]] >= sims[has].max(axis=1) - cfg.keep_margin
    out = rows.copy()
    out[has[near]] = before[has[near]]
    return out


def _match(x, rows, centroids, previous: TopicModel, previous_labels, fresh_terms,
           cfg: TopicConfig):
    """Ids, kept names and the change record for the new clusters (rows of ``centroids``)."""
    k = len(centroids)
    prev_ids = [t.id for t in previous.topics]
    col = {t: j for j, t in enumerate(prev_ids)}
    P = len(prev_ids)
    overlap = np.zeros((k, P))
    known = np.array([col.get(int(t), -1) for t in previous_labels.tolist()])
    mask = known >= 0
    np.add.at(overlap, (rows[mask], known[mask]), 1.0)
    n_new = np.bincount(rows, minlength=k).astype(float)
    n_old = np.bincount(known[mask], minlength=P).astype(float)
    jaccard = overlap / np.maximum(n_new[:, None] + n_old[None, :] - overlap, 1.0)
    # The previous topics' centroids carried into this space: their members' mean here.
    carried = np.zeros((P, x.shape[1]), np.float32)
    for j in range(P):
        members = mask & (known == j)
        if members.any():
            carried[j] = x[members].mean(axis=0)
    cosine = centroids @ unit(carried).T
    r_idx, c_idx = min_cost_assignment(-(jaccard + 0.1 * np.clip(cosine, 0, 1)))
    ids: list[int | None] = [None] * k
    names: list[str | None] = [None] * k
    changes: dict[str, list] = {"kept": [], "renamed": [], "split": [], "merged": [],
                                "appeared": [], "faded": []}
    for r, j in zip(r_idx.tolist(), c_idx.tolist()):
        if jaccard[r, j] < cfg.min_overlap:
            continue
        old = previous.topics[j]
        ids[r] = old.id
        if len(set(old.terms) & set(fresh_terms[r])) >= min(cfg.keep_name_terms, len(old.terms)):
            names[r] = old.name
            changes["kept"].append(old.id)
        else:
            changes["renamed"].append({"id": old.id, "from": old.name})
    next_id = max(previous.next_id, max(prev_ids, default=-1) + 1)
    for r in range(k):
        if ids[r] is None:
            ids[r] = next_id
            next_id += 1
    matched_old = {prev_ids[j] for r, j in zip(r_idx.tolist(), c_idx.tolist())
                   if ids[r] == prev_ids[j]}
    # Splits: an old topic whose members went in large parts to two or more new ones.
    split_parts = set()
    for j in range(P):
        parts = [r for r in range(k) if n_old[j] and overlap[r, j] >= cfg.split_share * n_old[j]]
        if len(parts) >= 2:
            changes["split"].append({"from": prev_ids[j], "into": sorted(ids[r] for r in parts)})
            split_parts.update(r for r in parts if ids[r] != prev_ids[j])
    # Merges: a new topic that took most of each of two or more old ones.
    merged_old = set()
    for r in range(k):
        sources = [j for j in range(P) if n_old[j] and overlap[r, j] >= cfg.merge_share * n_old[j]]
        if len(sources) >= 2:
            changes["merged"].append({"into": ids[r],
                                      "from": sorted(prev_ids[j] for j in sources)})
            merged_old.update(prev_ids[j] for j in sources if prev_ids[j] != ids[r])
    changes["appeared"] = sorted(ids[r] for r in range(k)
                                 if ids[r] not in col and r not in split_parts)
    changes["faded"] = sorted(t for t in prev_ids if t not in matched_old and t not in merged_old)
    return ids, names, changes, next_id


def _unique_names(topics: list[Topic], fresh_terms: list[list[str]], n: int) -> None:
    """Two topics named alike get their next distinguishing term (or their id) appended."""
    seen = Counter(t.name for t in topics)
    by_id = {t.id: k for k, t in enumerate(topics)}
    for t in topics:
        if seen[t.name] < 2:
            continue
        extra = [w for w in fresh_terms[by_id[t.id]] if w not in t.name.split(" · ")]
        t.name = f"{t.name} · {extra[0]}" if extra else f"{t.name} ({t.id})"
