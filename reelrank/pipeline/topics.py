"""Learned topics in the serving path: which topic a video is on, as the re-ranker, the
reasons, creator insights, the wellbeing rules and ``/v1/stats`` read it.

``LearnedTopics`` answers the same three questions as ``reelrank.topics.ATTRIBUTE_TOPICS``
(``of``, ``label``, ``name_of``) from the learned topics of the model version serving now
(``reelrank.learned_topics``, stored with the version by ``reelrank.train.topics``):

- a video in the version's catalog: the nearest topic centroid to its item-tower vector
  (computed once per version for the whole catalog, one matrix product);
- a video uploaded since: the nearest centroid to its content vector (its id is unknown to the
  model), computed when first asked and kept until the next version;
- with no learned topics (no model yet, or a version trained before topics existed): today's
  topic, ``reelrank.topics.topic_of``.

Where a video declares a topic, the operator's ``precedence`` setting says which wins:
``"declared"`` (the default) keeps its ``topic`` attribute or first hashtag, so learned topics
cover the videos that declare nothing (an app that sends no hashtags gets topics all the same);
``"attribute"`` keeps only an explicit ``topic`` attribute; ``"learned"`` always reads the
learned topic.
An operator can also mark learned topics sensitive; the wellbeing rules then treat their
videos as they treat ``#gambling``. Both settings are kept in a small JSON file beside the
models (``TopicSettings.load`` / ``save``), so they survive restarts.

Online versions carry no topics of their own: their base version's are read, and the last
topics seen stay in use when that version has been pruned.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from reelrank.learned_topics import LEARNED_PREFIX, TopicModel
from reelrank.topics import topic_label, topic_of
from reelrank.types import Item

log = logging.getLogger(__name__)

PRECEDENCES = ("attribute", "learned", "declared")
SETTINGS_FILE = "topic-settings.json"


@dataclass
class TopicSettings:
    # Which wins over a video's learned topic: its topic attribute ("attribute"), nothing
    # ("learned"), or its attribute or first hashtag ("declared", the default: on KuaiRand the
    # learned topics agree with the first tag at NMI 0.17 only, and the served feed's figures
    # were measured with the declared topics).
    precedence: str = "declared"
    sensitive: frozenset[int] = field(default_factory=frozenset)  # learned topic ids

    def __post_init__(self) -> None:
        if self.precedence not in PRECEDENCES:
            raise ValueError(f"precedence must be one of {PRECEDENCES}, not {self.precedence!r}")
        self.sensitive = frozenset(int(t) for t in self.sensitive)

    def view(self) -> dict:
        return {"precedence": self.precedence, "sensitive": sorted(self.sensitive)}

    @classmethod
    def load(cls, path: Path | None) -> "TopicSettings":
        if path is None or not Path(path).is_file():
            return cls()
        data = json.loads(Path(path).read_text())
        return cls(data.get("precedence", cls.precedence), frozenset(data.get("sensitive", ())))

    def save(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".topic-settings-", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(self.view(), f)
        os.replace(tmp, path)


@dataclass
class _Current:
    key: object  # the LoadedModels instance these labels were computed for
    version: str
    carried_by: str | None  # the version whose meta holds the topics
    model: TopicModel | None
    labels: np.ndarray | None  # (I,) topic id per row of the version's item vectors
    meta: dict | None


class LearnedTopics:
    def __init__(self, models, registry=None, settings: TopicSettings | None = None,
                 settings_path: Path | None = None, max_uploads: int = 20_000):
        """``models``: a ``ServingModels``; ``registry``: where an online version's base meta
        is read. ``settings_path``: where ``set_settings`` saves (and the default settings are
        read from)."""
        self.models = models
        self.registry = registry
        self.settings_path = Path(settings_path) if settings_path else None
        self.settings = settings or TopicSettings.load(self.settings_path)
        self.max_uploads = max_uploads
        self._current: _Current | None = None
        self._last: tuple[str | None, TopicModel, dict] | None = None  # kept across versions
        self._uploads: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    # -- settings ---------------------------------------------------------------------------------
    def set_settings(self, precedence: str | None = None,
                     sensitive: list[int] | None = None) -> TopicSettings:
        new = TopicSettings(precedence or self.settings.precedence,
                            frozenset(sensitive) if sensitive is not None
                            else self.settings.sensitive)
        if self.settings_path is not None:
            new.save(self.settings_path)
        self.settings = new
        return new

    # -- the version's topics ---------------------------------------------------------------------
    def state(self) -> _Current | None:
        m = self.models.current
        if m is None:
            return None
        cur = self._current
        if cur is not None and cur.key is m:
            return cur
        with self._lock:
            cur = self._current
            if cur is not None and cur.key is m:
                return cur
            cur = self._load(m)
            if cur.version != (self._current.version if self._current else None):
                self._uploads.clear()
            self._current = cur
            return cur

    def _load(self, m) -> _Current:
        from reelrank.registry import topics_of

        own = m.meta.get("topics")
        carried_by = m.version if own else m.meta.get("base_version")
        last = self._last
        if last is not None and carried_by is not None and last[0] == carried_by:
            model, meta = last[1], last[2]  # an online version of the same base: no file read
        else:
            meta = own
            if not meta:
                try:
                    meta = topics_of(m.meta, self.registry)
                except Exception:  # the base version's meta could not be read: keep the last
                    log.exception("reading the base version's topics failed")
            if meta:
                model = TopicModel.from_meta(meta)
                self._last = (carried_by, model, meta)
            elif last is not None:
                carried_by, model, meta = last
            else:
                return _Current(m, m.version, None, None, None, None)
        vectors = m.item_vectors
        prev = self._current
        if (prev is not None and prev.model is model and prev.labels is not None
                and prev.key.item_vectors is vectors):
            labels = prev.labels  # a ranker-only version: the same item vectors
        elif (vectors is not None and len(model)
                and vectors.shape[1] == model.centroids.shape[1]):
            labels = model.labels(vectors.numpy(), m.item_index)
        else:
            labels = None
        return _Current(m, m.version, carried_by, model, labels, meta)

    def model(self) -> TopicModel | None:
        cur = self.state()
        return cur.model if cur is not None else None

    def learned_id(self, item: Item | None) -> int | None:
        """The learned topic id of a video, or None without learned topics."""
        if item is None:
            return None
        cur = self.state()
        if cur is None or cur.model is None or cur.labels is None:
            return None
        row = cur.key.item_index.get(item.item_id)
        if row is not None and row < len(cur.labels):
            return int(cur.labels[row])
        hit = self._uploads.get(item.item_id)
        if hit is not None:
            return hit
        retrieval = cur.key.bundle.retrieval
        if retrieval is None:
            return None
        with torch.no_grad():
            vector = retrieval.item_vectors(retrieval.items.encode_items([item])).numpy()
        topic = int(cur.model.assign(vector)[0])
        with self._lock:
            self._uploads[item.item_id] = topic
            while len(self._uploads) > self.max_uploads:
                self._uploads.popitem(last=False)
        return topic

    # -- the reader -------------------------------------------------------------------------------
    def of(self, item: Item | None) -> str | None:
        if item is None:
            return None
        explicit = item.attributes.get("topic") if item.attributes else None
        precedence = self.settings.precedence
        if explicit and precedence == "attribute":
            return str(explicit)
        if precedence == "declared" and (declared := topic_of(item)) is not None:
            return declared
        learned = self.learned_id(item)
        if learned is not None:
            return f"{LEARNED_PREFIX}{learned}"
        return topic_of(item)

    def label(self, topic: str | None) -> str:
        if topic is not None and topic.startswith(LEARNED_PREFIX):
            model = self.model()
            t = model.get(int(topic[len(LEARNED_PREFIX):])) if model is not None else None
            return t.name if t is not None else f"topic {topic[len(LEARNED_PREFIX):]}"
        return topic_label(topic)

    def name_of(self, item: Item | None) -> str:
        return self.label(self.of(item))

    def is_sensitive(self, item: Item) -> bool:
        """Whether the operator marked the video's learned topic sensitive."""
        if not self.settings.sensitive:
            return False
        learned = self.learned_id(item)
        return learned is not None and learned in self.settings.sensitive

    def reasons(self, ctx, item: Item) -> tuple:
        """"you watched 3 videos in <topic> to the end": the viewer's long views (recent
        history) of the item's learned topic, counted once per request; () when the item's
        topic is not a learned one or the viewer has none of it."""
        from reelrank.types import Reason, is_long_view

        key = self.of(item)
        if ctx.user is None or key is None or not key.startswith(LEARNED_PREFIX):
            return ()
        counts = ctx.cache.get("learned_topic_long_views")
        if counts is None:
            counts = {}
            for h in tuple(ctx.user.history):
                if h.type != "play":
                    continue
                seen = ctx.catalog.get(h.item_id)
                if seen is not None and is_long_view(h.watch_ms, seen.duration_ms):
                    k = self.of(seen)
                    counts[k] = counts.get(k, 0) + 1
            ctx.cache["learned_topic_long_views"] = counts
        k = counts.get(key, 0)
        if not k:
            return ()
        noun = "video" if k == 1 else "videos"
        return (Reason("topic_affinity",
                       f"you watched {k} {noun} in {self.label(key)} to the end"),)

    # -- for operators ----------------------------------------------------------------------------
    def view(self) -> dict:
        """The serving version's learned topics, their sizes in its catalog, the changes
        recorded against the version before, and the settings."""
        cur = self.state()
        out: dict = {"settings": self.settings.view(), "version": None, "topics": []}
        if cur is None or cur.model is None:
            out["note"] = "no learned topics: no model version with topics is serving"
            return out
        sizes = (dict(zip(*np.unique(cur.labels, return_counts=True)))
                 if cur.labels is not None else {})
        out.update(version=cur.version, carried_by=cur.carried_by,
                   previous_version=cur.meta.get("previous_version"),
                   changes=cur.meta.get("changes", {}),
                   unchanged_share=cur.meta.get("unchanged_share"),
                   kept_videos=len(cur.model.kept),
                   topics=[{"id": t.id, "key": t.key, "name": t.name, "terms": t.terms,
                            "videos": int(sizes.get(t.id, 0)),
                            "sensitive": t.id in self.settings.sensitive}
                           for t in cur.model.topics])
        return out


def install(engine, settings_path: Path | None = None, pipeline=None,
            settings: TopicSettings | None = None) -> LearnedTopics:
    """Learned topics for an engine's served pipeline: its re-ranker's topic rule and its
    wellbeing rules read them (the caller hands the same reader to insights and stats).
    ``settings_path``: default ``topic-settings.json`` beside the engine's models.
    ``pipeline``: another pipeline over the engine's models instead of the engine's own (an
    evaluation's variant), with ``settings`` of its own (not read from or saved to a file)."""
    registry = getattr(engine, "registry", None)
    if settings is not None:
        topics = LearnedTopics(engine.models, registry, settings=settings)
    else:
        if settings_path is None and registry is not None:
            settings_path = Path(registry.root) / SETTINGS_FILE
        topics = LearnedTopics(engine.models, registry, settings_path=settings_path)
    pipeline = engine.pipeline if pipeline is None else pipeline
    if getattr(pipeline, "reranker", None) is not None and hasattr(pipeline.reranker, "topics"):
        pipeline.reranker.topics = topics
    if getattr(pipeline, "wellbeing", None) is not None:
        pipeline.wellbeing.topics = topics
    # The reasons: the heuristic scorer words them, also for the neural scorer (its fallback).
    scorer = getattr(pipeline, "scorer", None)
    for s in (scorer, getattr(scorer, "fallback", None)):
        if s is not None and hasattr(s, "topics"):
            s.topics = topics
    return topics


def entropy_bits(counts) -> float | None:
    values = np.asarray([c for c in counts if c > 0], dtype=np.float64)
    if not len(values):
        return None
    p = values / values.sum()
    return float(-(p * np.log2(p)).sum())


def served_figures(topics: LearnedTopics, catalog, live, max_viewers: int = 5_000,
                   per_viewer: int = 50) -> dict:
    """For ``/v1/stats``: the entropy (bits) of the topics of what was recently served, over
    all slots and per viewer (mean), beside the catalog's own; by the topics the feed reads
    (learned where a version has them). At most ``max_viewers`` viewers' last ``per_viewer``
    served videos are read, so the figure costs the same however many viewers there are."""
    from collections import Counter

    overall: Counter = Counter()
    per: list[float] = []
    for uid in live.user_ids()[:max_viewers]:
        u = live.user(uid)
        if u is None or not u.served:
            continue
        mine: Counter = Counter()
        for item_id in list(u.served)[-per_viewer:]:
            mine[topics.of(catalog.get(item_id)) or "(none)"] += 1
        overall.update(mine)
        e = entropy_bits(mine.values())
        if e is not None:
            per.append(e)
    in_catalog: Counter = Counter()
    model = topics.model()
    cur = topics.state()
    if cur is not None and cur.labels is not None:
        in_catalog.update(cur.labels.tolist())
    return {
        "learned": model is not None, "topics": len(model) if model is not None else None,
        "precedence": topics.settings.precedence,
        "served_topic_entropy_bits": _round(entropy_bits(overall.values())),
        "per_viewer_topic_entropy_bits": _round(sum(per) / len(per)) if per else None,
        "catalog_topic_entropy_bits": _round(entropy_bits(in_catalog.values())),
        "viewers": len(per),
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)
