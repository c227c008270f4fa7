"""The model set in serving: loading a published version and swapping it in.

``ServingModels`` holds the model set in use and swaps in a newly published version without a
restart: the new set is loaded and its catalog vectors and index built off to the side, then
one reference assignment makes it current. A request holds the set it started with, so a swap
in the middle of a request changes nothing for that request. ``LoadedModels`` is one such set:
the bundle, the catalog's rows, the retrieval vectors and their index, and the ranker's item
inputs. Versions that changed only the ranker (the online trainer's) reuse everything of the
catalog work the current set holds. The retrieval source and the scorer that read a set are in
``pipeline/neural.py``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import torch

from reelrank.models.bundle import ModelBundle
from reelrank.models.retrieval import ItemInputs, caption_words
from reelrank.models.vocabulary import UNKNOWN_ROW
from reelrank.registry import ModelRegistry
from reelrank.store.live import CatalogView
from reelrank.types import Item

log = logging.getLogger(__name__)


@dataclass
class LoadedModels:
    version: str
    bundle: ModelBundle
    meta: dict
    item_ids: list[str]  # row order of item_vectors and of the ranker's item cache
    item_index: dict[str, int]
    item_vectors: torch.Tensor | None  # (I, D) retrieval vectors
    index: object | None  # a reelrank.index.VectorIndex over item_vectors
    ranker_items: ItemInputs | None
    retrieval_items: ItemInputs | None = None  # the catalog's retrieval inputs (item_ids order)
    catalog_version: int = -1  # the catalog's ``version`` these rows were read at
    # The ranker's item tower output per catalog row, filled as rows are first ranked under
    # this version (a version's weights never change, so a row computed once stays right).
    ranker_vectors: torch.Tensor | None = field(init=False, default=None)  # (I, D)
    ranker_ready: torch.Tensor | None = field(init=False, default=None)  # (I,) bool

    def __post_init__(self) -> None:
        if self.ranker_items is not None:
            self.ranker_vectors = torch.empty((len(self.ranker_items), self.bundle.ranker.dim))
            self.ranker_ready = torch.zeros(len(self.ranker_items), dtype=torch.bool)

    def ranker_item_vectors(self, rows: torch.Tensor) -> torch.Tensor:
        """(N,) catalog rows -> (N, D) ranker item vectors, computing the rows not cached yet.
        Two requests may compute the same row at once; they write the same values."""
        ready = self.ranker_ready[rows]
        if not bool(ready.all()):
            missing = rows[~ready].unique()
            with torch.no_grad():
                self.ranker_vectors[missing] = self.bundle.ranker.items(self.ranker_items[missing])
            self.ranker_ready[missing] = True
        return self.ranker_vectors[rows]


class ServingModels:
    def __init__(self, registry: ModelRegistry | None, catalog: CatalogView, index_kind: str = "ann"):
        self.registry = registry
        self.catalog = catalog
        self.index_kind = index_kind
        self.current: LoadedModels | None = None
        self._accounted: str | None = None  # the registry version last loaded or handed over
        self._lock = threading.Lock()

    @property
    def version(self) -> str | None:
        cur = self.current
        return cur.version if cur else None

    def refresh(self) -> bool:
        """Load the registry's latest version if it is not the one in use; True if swapped."""
        if self.registry is None:
            return False
        latest = self.registry.latest()
        # A version handed over in memory may be newer than the registry's latest: only a
        # version published since is worth loading.
        if latest is None or latest in (self.version, self._accounted):
            return False
        with self._lock:
            if latest in (self.version, self._accounted):
                return False
            started = time.perf_counter()
            cur = self.current
            # A version that changed only the ranker (the online trainer's usual one) keeps the
            # retrieval module serving has: its weights are not even read.
            keep = (cur.bundle.retrieval if _same_retrieval(cur, self.registry.meta(latest))
                    else None)
            artifact = self.registry.load(latest, skip=("retrieval",) if keep else ())
            loaded = self._prepare(artifact.version,
                                   ModelBundle.from_state(artifact.state, retrieval=keep,
                                                          previous=cur.bundle if cur else None,
                                                          assign=True),
                                   artifact.meta)
            self.current = loaded  # the swap: one reference assignment
            self._accounted = latest
        log.info("serving model version %s (loaded and prepared in %.1f ms)", latest,
                 (time.perf_counter() - started) * 1000)
        return True

    def install(self, version: str, bundle: ModelBundle, meta: dict,
                published: str | None = None) -> None:
        """Serve a model set handed over in memory (the in-process online trainer), with the
        same off-to-the-side preparation and one-assignment swap as ``refresh``. ``published``:
        the registry version it derives from or was saved as, which ``refresh`` need not load."""
        with self._lock:
            self.current = self._prepare(version, bundle, meta)
            if published is not None:
                self._accounted = published
        log.debug("serving model version %s", version)

    def add_items(self, items: list[Item]) -> None:
        """New or changed uploads get a retrieval vector from their content right away, so
        they can be retrieved before the next training run."""
        cur = self.current
        if cur is None or cur.index is None or not items:
            return
        retrieval = cur.bundle.retrieval
        with torch.no_grad():
            vectors = retrieval.item_vectors(retrieval.items.encode_items(items))
        invisible = [it.item_id for it in items if not it.visible]
        cur.index.add([it.item_id for it in items], vectors.numpy().astype("float32"))
        if invisible:
            cur.index.remove(invisible)

    def _prepare(self, version: str, bundle: ModelBundle, meta: dict) -> LoadedModels:
        catalog_version = self.catalog.version  # read first: a later upsert redoes the work
        cur = self.current
        if (cur is not None and cur.catalog_version == catalog_version
                and cur.index is not None and bundle.ranker is not None
                and cur.ranker_items is not None and _same_retrieval(cur, meta)
                and meta.get("ranker_items_version") is not None
                and cur.meta.get("ranker_items_version") == meta["ranker_items_version"]):
            # The online trainer's usual version: new ranker weights, the same retrieval
            # weights and item vocabulary, and no upload since. Everything but the ranker
            # (catalog order, encodings, vectors, index) is the current version's, with no
            # pass over the catalog.
            bundle.retrieval = cur.bundle.retrieval
            return LoadedModels(version, bundle, meta, cur.item_ids, cur.item_index,
                                cur.item_vectors, cur.index, cur.ranker_items,
                                cur.retrieval_items, catalog_version)
        items = [self.catalog.get(i) for i in self.catalog.ids()]
        items = [it for it in items if it is not None]
        ids = [it.item_id for it in items]
        vectors = index = ranker_items = None
        kept = [self.catalog.get(i) for i in cur.item_ids] if cur is not None else []
        if _same_retrieval(cur, meta) and cur.index is not None and all(kept):
            # Online versions that changed only the ranker keep the retrieval model, its
            # vectors and its index: rebuilding the index takes seconds on a large catalog.
            # Uploads since then are in the index already (``add_items``); they get their rows.
            bundle.retrieval, index = cur.bundle.retrieval, cur.index
            new = [it for it in items if it.item_id not in cur.item_index]
            items = kept + new
            ids = cur.item_ids + [it.item_id for it in new]
            vectors = cur.item_vectors
            if new:
                with torch.no_grad():
                    fresh = bundle.retrieval.item_vectors(bundle.retrieval.items.encode_items(new))
                vectors = torch.cat([vectors, fresh])
        retrieval_items = cur.retrieval_items if cur is not None and index is not None else None
        with torch.no_grad():
            if bundle.retrieval is not None and items and index is None:
                tag = meta.get("retrieval_items_version")
                if (tag is not None and cur is not None and cur.retrieval_items is not None
                        and cur.meta.get("retrieval_items_version") == tag
                        and ids[:len(cur.item_ids)] == cur.item_ids):
                    # New retrieval weights, same item vocabulary: the encoding (a Python pass
                    # over the whole catalog) is reused; only the vectors are recomputed.
                    retrieval_items = cur.retrieval_items
                    if len(items) > len(cur.item_ids):
                        retrieval_items = _cat_inputs(retrieval_items, bundle.retrieval.items
                                                      .encode_items(items[len(cur.item_ids):]))
                else:
                    retrieval_items = bundle.retrieval.items.encode_items(items)
                vectors = bundle.retrieval.item_vectors(retrieval_items)
                index = _make_index(self.index_kind, ids, vectors)
            if bundle.ranker is not None and items:
                tag = meta.get("ranker_items_version")
                n = len(cur.item_ids) if cur is not None else 0
                known = (cur is not None and cur.ranker_items is not None
                         and cur.bundle.ranker is not None and ids[:n] == cur.item_ids)
                if known and tag is not None and cur.meta.get("ranker_items_version") == tag:
                    # The ranker's item vocabulary is unchanged (online steps that admitted no
                    # new id): the row indices of the known items are too.
                    ranker_items = cur.ranker_items
                elif known and (refreshed := _admitted_only(
                        cur.ranker_items, cur.bundle.ranker.items, bundle.ranker.items,
                        items[:n])) is not None:
                    # The vocabulary only gained ids (an online step admitted a new upload's):
                    # only the videos that read the unknown row for one of them change.
                    ranker_items = refreshed
                else:
                    known = False
                if known:
                    if len(items) > n:
                        ranker_items = _cat_inputs(
                            ranker_items, bundle.ranker.items.encode_items(items[n:]))
                else:
                    ranker_items = bundle.ranker.items.encode_items(items)
        if retrieval_items is not None and len(retrieval_items) != len(ids):
            retrieval_items = None  # uploads since: encoded again with the next retrieval
        return LoadedModels(version, bundle, meta, ids, {i: k for k, i in enumerate(ids)},
                            vectors, index, ranker_items, retrieval_items, catalog_version)


def _same_retrieval(cur: LoadedModels | None, meta: dict) -> bool:
    """Whether a version's retrieval weights are the ones serving runs now."""
    same = meta.get("retrieval_version")
    return (same is not None and cur is not None
            and cur.meta.get("retrieval_version", cur.version) == same)


_TOKENS = {  # the ids of an item that each item-tower table looks up
    "item": lambda it: (it.item_id,), "creator": lambda it: (it.creator_id,),
    "sound": lambda it: (it.sound_id,), "tag": lambda it: it.hashtags,
    "word": lambda it: caption_words(it.caption),
}


def _admitted_only(encoded: ItemInputs, old, new, items: list[Item]) -> ItemInputs | None:
    """``encoded`` (``items`` under the item tower ``old``) brought up to the item tower
    ``new``, re-encoding only the items that need it; None when ``new`` did more than admit
    ids (a known id lost or changed its row), and everything must be encoded again."""
    fields = (("item", "item"), ("creator", "creator"), ("sound", "sound"), ("tag", "tags"),
              ("word", "words"))
    added = {}
    for table, _ in fields:
        before, after = getattr(old, table).rows, getattr(new, table).rows
        if before is after:
            continue
        if not before.items() <= after.items():  # C-level: every known id kept its row
            return None
        if len(after) > len(before):
            added[table] = after.keys() - before.keys()
    if not added:
        return encoded
    unknown = torch.zeros(len(items), dtype=torch.bool)
    for table, attr in fields:
        new_ids = added.get(table)
        if not new_ids:
            continue
        values = getattr(encoded, attr)
        rows = values == UNKNOWN_ROW
        rows = rows.any(1) if rows.dim() > 1 else rows
        tokens = _TOKENS[table]
        for k in torch.nonzero(rows & ~unknown).flatten().tolist():
            if not new_ids.isdisjoint(tokens(items[k])):
                unknown[k] = True
    where = torch.nonzero(unknown).flatten()
    if not len(where):
        return encoded
    fresh = new.encode_items([items[k] for k in where.tolist()])
    out = ItemInputs(*(getattr(encoded, f).clone() for f in _INPUT_FIELDS))
    for f in _INPUT_FIELDS:
        getattr(out, f)[where] = getattr(fresh, f)
    return out


_INPUT_FIELDS = ("item", "creator", "sound", "tags", "duration", "words")  # ItemInputs, in order


def _cat_inputs(a: ItemInputs, b: ItemInputs) -> ItemInputs:
    return ItemInputs(*(torch.cat([getattr(a, f), getattr(b, f)]) for f in _INPUT_FIELDS))


def _make_index(kind: str, ids: list[str], vectors: torch.Tensor):
    from reelrank.index import make_index

    if kind == "ann":
        import faiss

        # One request per thread: faiss' OpenMP threads only wait on each other here
        # (benchmarks/results/index.md).
        faiss.omp_set_num_threads(1)

    index = make_index(kind)
    index.build(ids, vectors.numpy().astype("float32"))
    return index
