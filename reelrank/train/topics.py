"""Learned topics for a version being published: cluster the trained item tower's vectors of
the catalog (``reelrank.learned_topics``), matched to the topics of the version serving now.

The previous version's topic of every current video is what viewers were shown: its own
retrieval model's vector of the video, nearest to its own centroids, or the topic the video
kept when that version was learned (``TopicModel.kept``). That labelling is what the
new clusters are matched against, so an id means the same videos before and after a retrain.
A version without topics of its own (the online trainer's) carries its base version's
(``registry.topics_of``).
"""

from __future__ import annotations

import logging
import time
from typing import Sequence

import numpy as np
import torch

from reelrank.learned_topics import TopicConfig, TopicModel, fit_topics
from reelrank.models.bundle import ModelBundle
from reelrank.models.retrieval import TwoTower
from reelrank.registry import topics_of
from reelrank.types import Item

log = logging.getLogger(__name__)


def item_vectors(retrieval: TwoTower, items: Sequence[Item], chunk: int = 65_536) -> np.ndarray:
    """(N, D) float32 item-tower vectors of ``items`` in inference mode (lookups only: an id
    the model never admitted reads the unknown row, so a new video's vector is its content's)."""
    was_training = retrieval.training
    retrieval.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(items), chunk):
            out.append(retrieval.item_vectors(
                retrieval.items.encode_items(items[s:s + chunk])).numpy())
    retrieval.train(was_training)
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


def previous_labels(registry, items: Sequence[Item]) -> tuple[str, TopicModel, np.ndarray] | None:
    """The latest published version, its topic model, and its topic id of each of ``items``
    (None when nothing with topics is published)."""
    if registry is None or (latest := registry.latest()) is None:
        return None
    meta = topics_of(registry.meta(latest), registry)
    if not meta:
        return None
    model = TopicModel.from_meta(meta)
    artifact = registry.load(latest)
    retrieval = ModelBundle.from_state(artifact.state).retrieval
    if retrieval is None:
        return None
    return latest, model, model.labels(item_vectors(retrieval, items),
                                       {it.item_id: r for r, it in enumerate(items)})


def learn_version_topics(retrieval: TwoTower, items: Sequence[Item], registry=None,
                         cfg: TopicConfig | None = None) -> dict | None:
    """The ``topics`` entry of a new version's meta, or None when they could not be learned
    (logged: a failure here never fails the training run that publishes the models)."""
    try:
        started = time.perf_counter()
        vectors = item_vectors(retrieval, items)
        prev = None
        try:
            prev = previous_labels(registry, items)
        except Exception:
            log.exception("topics: the previous version's topics could not be read; "
                          "new ids are given")
        model, labels = fit_topics(vectors, items, cfg,
                                   prev[1] if prev else None, prev[2] if prev else None)
        out = model.to_meta()
        out["previous_version"] = prev[0] if prev else None
        if prev is not None:
            out["unchanged_share"] = round(float(np.mean(labels == prev[2])), 4)
        out["seconds"] = round(time.perf_counter() - started, 2)
        log.info("learned %d topics over %d videos in %.1f s", len(model), len(items),
                 out["seconds"])
        return out
    except Exception:
        log.exception("learning topics failed; the version is published without them")
        return None
