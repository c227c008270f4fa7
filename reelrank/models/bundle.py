"""A trained model set as one unit: retrieval and ranker with the settings that rebuild them.

``state()`` gives plain data (state dicts, kwargs, lists) that the registry saves with
``torch.save`` and loads with ``weights_only=True``; ``ModelBundle.from_state`` rebuilds the
modules. No I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from reelrank.models.embeddings import DynamicEmbedding
from reelrank.models.ranker import DEFAULT_VALUE_WEIGHTS, Ranker
from reelrank.models.retrieval import TwoTower


@dataclass
class ModelBundle:
    retrieval: TwoTower | None = None
    retrieval_kwargs: dict[str, Any] = field(default_factory=dict)
    ranker: Ranker | None = None
    ranker_kwargs: dict[str, Any] = field(default_factory=dict)
    value_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_VALUE_WEIGHTS))

    def state(self, retrieval: bool = True) -> dict[str, Any]:
        """``retrieval=False``: leave the retrieval weights out (None), for a publisher that
        links them from an earlier version (``ModelRegistry.publish(reuse=...)``)."""
        return {
            "format": 1,
            "retrieval": (self.retrieval.state_dict()
                          if retrieval and self.retrieval is not None else None),
            "retrieval_kwargs": _plain(self.retrieval_kwargs),
            "ranker": self.ranker.state_dict() if self.ranker is not None else None,
            "ranker_kwargs": _plain(self.ranker_kwargs),
            "value_weights": dict(self.value_weights),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], retrieval: TwoTower | None = None,
                   previous: "ModelBundle | None" = None,
                   assign: bool = False) -> "ModelBundle":
        """``retrieval``: a module already holding this state's retrieval weights (a serving
        process swapping in a version that changed only the ranker), used instead of building
        another copy from the state. ``previous``: the bundle serving runs now; its embedding
        tables' id mappings are shared where the state's are the same (never changed by
        either: serving does not admit ids). ``assign``: the modules take the state's tensors
        as their parameters instead of copies (for a reader that never changes them: serving;
        memory-mapped tensors stay backed by their file)."""
        ranker = None
        if retrieval is None and state.get("retrieval") is not None:
            retrieval = TwoTower(**state["retrieval_kwargs"])
            _reuse_vocabularies(retrieval, previous.retrieval if previous else None)
            retrieval.load_state_dict(state["retrieval"], assign=assign)
            retrieval.eval()
        if state.get("ranker") is not None:
            ranker = Ranker(**state["ranker_kwargs"])
            _reuse_vocabularies(ranker, previous.ranker if previous else None)
            ranker.load_state_dict(state["ranker"], assign=assign)
            ranker.eval()
        return cls(retrieval, dict(state.get("retrieval_kwargs", {})), ranker,
                   dict(state.get("ranker_kwargs", {})),
                   dict(state.get("value_weights", DEFAULT_VALUE_WEIGHTS)))


def _reuse_vocabularies(module: torch.nn.Module, previous: torch.nn.Module | None) -> None:
    if previous is None:
        return
    tables = {name: m for name, m in previous.named_modules() if isinstance(m, DynamicEmbedding)}
    for name, m in module.named_modules():
        if isinstance(m, DynamicEmbedding):
            m.reuse_vocabulary_of(tables.get(name))


def _plain(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Tuples become lists so the state loads under ``weights_only=True``."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}
