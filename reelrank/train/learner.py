"""Online learning: small training steps on the examples the event stream closes, as it flows.

``OnlineLearner`` is the synchronous core, with no threads and no I/O: it holds a training copy
of a published ``ModelBundle``, takes ``RankingRow``s (``features.RowStream`` makes them from
events, with the same live-state features serving computes) and updates

- the ranker: one Adam step per batch of closed impressions, with the batch trainer's loss
  (per-task cross-entropy plus the same-viewer pairwise term, ``train.ranker``). A full batch
  moves every weight; a partial one (thin traffic: whatever waited ``max_wait_ms``) moves only
  the embedding rows of the ids it holds (see ``OnlineConfig.partial_dense``);
- the retrieval model: one sampled-softmax step per batch of positives (long views and explicit
  positives), each predicted from the viewer's history before it, against the batch's other
  positives and negatives drawn half from recent positives and half uniformly from the catalog,
  with log-Q correction.

New ids (videos, creators, tags, context values) are admitted into the dynamic embedding tables
as they appear, so a video uploaded after the last batch run gets its own learned row within
seconds of its first views. Batch norm keeps the running statistics of the batch run: a small
online batch is not a sample of the whole traffic.

``reelrank.train.trainer`` runs a learner against the store's event log in a thread or a
process and publishes its versions; ``reelrank.eval.replay`` drives one in event time.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from reelrank.features import RankingRow
from reelrank.join import token_from_example
from reelrank.models.bundle import ModelBundle
from reelrank.models.embeddings import DynamicEmbedding
from reelrank.models.losses import sampled_softmax_loss
from reelrank.models.retrieval import encode_histories
from reelrank.store.live import CatalogView
from reelrank.train.epochs import WeightAverage
from reelrank.train.ranker import WatchQuantiles, build_table, observe_context, pairwise_loss
from reelrank.types import Item

log = logging.getLogger(__name__)


@dataclass
class OnlineConfig:
    batch_size: int = 256  # rows per step
    max_wait_ms: int = 1_000  # a smaller batch is trained once its oldest row waited this long
    max_queue: int = 20_000  # rows waiting for a step; beyond it the oldest are dropped
    ranker_lr: float = 1e-4
    # On KuaiRand's served feed day by day 2e-4 gave Recall@50 0.2138 against 0.2074 on the
    # test days, but -0.0107 on a validation split and new viewers on the synthetic world lose
    # with it (benchmarks/results/online-retrieval.md): not changed.
    retrieval_lr: float = 5e-5
    # The retrieval model learns only from positives of viewers with at least this many
    # videos behind them (0: from all).
    retrieval_min_history: int = 0
    # Learning rate of the retrieval model's shared content tables (creator, sound, tags,
    # words), as a share of its per-video rows': a tag's row moves every video that carries it.
    retrieval_shared_lr_scale: float = 1.0
    # Positives of viewers with fewer videos behind them than this move the per-video rows
    # but not those shared content tables (0: every positive moves them).
    retrieval_shared_min_history: int = 0
    optimizer: str = "adam"  # adam | adagrad | sgd
    # A partial batch (traffic too thin to fill one within max_wait_ms) steps with the learning
    # rate scaled by its share of a full batch: Adam moves every weight about as far whatever
    # the batch, so without it a dozen rows would pull as hard as a full batch, noise and all.
    scale_partial: bool = False
    # Learning rate of everything but the embedding tables, as a share of the embeddings'. An
    # update of the shared layers moves every score; an embedding row moves only its id's.
    dense_lr_scale: float = 1.0
    # Whether a partial batch also updates the shared layers. On KuaiRand (a validation day,
    # benchmarks/results/realtime-replay-tuning.md) frequent steps of a dozen rows that moved
    # the shared layers lowered GAUC by 0.02-0.06 whatever the learning rate, optimizer or
    # scaling: each step shifted every score by the last few viewers' outcomes. Steps that
    # moved only the embedding rows of the ids in the batch did no harm.
    partial_dense: bool = False
    pairwise_weight: float = 3.0  # as in RankerConfig (the batch run's loss)
    negatives: int = 256
    train_ranker: bool = True
    train_retrieval: bool = True
    history_len: int = 30  # the ranker's history (RankerConfig.history_len)
    quantile_views: int = 50_000  # recent views the watch-time quantiles are taken over
    # Serve a moving average of the learner's weights over its steps (decay, ``WeightAverage``)
    # instead of its latest weights; None: the latest.
    average: float | None = None
    seed: int = 0


@dataclass
class StepReport:
    rows: int
    ranker_loss: float | None = None
    retrieval_loss: float | None = None
    retrieval_rows: int = 0
    ended: list[int] = field(default_factory=list)  # view-end times of the rows trained


class OnlineLearner:
    """A training copy of one published model set, updated in small steps."""

    def __init__(self, bundle: ModelBundle, catalog: CatalogView, cfg: OnlineConfig | None = None):
        self.cfg = cfg or OnlineConfig()
        self.bundle = bundle
        self.catalog = catalog
        self.queue: deque[tuple[int, RankingRow]] = deque()  # (arrival clock, row)
        self.dropped = 0
        self.steps = 0
        self.rows_trained = 0
        self.retrieval_steps = 0
        self._views: deque[tuple[int, int]] = deque(maxlen=self.cfg.quantile_views)
        self._quantiles: WatchQuantiles | None = None
        self._views_since_quantiles = 0
        self._recent_positives: deque[str] = deque(maxlen=20_000)
        self._positive_counts: Counter = Counter()
        self._catalog_ids: list[str] = []
        self._rng = np.random.default_rng(self.cfg.seed)
        self._vocab_seen = self._vocab_marker()
        self.vocab_changes = 0  # how often the ranker's item vocabulary changed (new ids)
        self._ranker_opt = self._retrieval_opt = None
        if bundle.ranker is not None and self.cfg.train_ranker:
            self._ranker_opt = _optimizer(self.cfg.optimizer, bundle.ranker, self.cfg.ranker_lr,
                                          self.cfg.dense_lr_scale)
        if bundle.retrieval is not None and self.cfg.train_retrieval:
            self._retrieval_opt = _optimizer(self.cfg.optimizer, bundle.retrieval,
                                             self.cfg.retrieval_lr, self.cfg.dense_lr_scale,
                                             shared_share=self.cfg.retrieval_shared_lr_scale)
        self._ranker_avg = self._retrieval_avg = None
        if self.cfg.average:
            if self._ranker_opt is not None:
                self._ranker_avg = WeightAverage(bundle.ranker, self.cfg.average)
            if self._retrieval_opt is not None:
                self._retrieval_avg = WeightAverage(bundle.retrieval, self.cfg.average)

    # -- input ---------------------------------------------------------------------------------
    def observe(self, rows: Sequence[RankingRow]) -> None:
        """Rows already learned by the base model (the log before it): they only tune the
        watch-time quantiles and the negative sampler."""
        for r in rows:
            self._note(r)

    def add(self, rows: Sequence[RankingRow], clock: int) -> None:
        """Rows to train on; ``clock`` is when they arrived (the caller's time, ms)."""
        for r in rows:
            self._note(r)
            self.queue.append((clock, r))
        while len(self.queue) > self.cfg.max_queue:
            self.queue.popleft()
            self.dropped += 1

    def _note(self, r: RankingRow) -> None:
        ex = r.example
        if ex.watch_ms > 0 and ex.revision == 0:
            self._views.append((ex.duration_ms, ex.watch_ms))
            self._views_since_quantiles += 1
        if ex.revision == 0 and token_from_example(ex).positive:
            if len(self._recent_positives) == self._recent_positives.maxlen:
                old = self._recent_positives[0]
                self._positive_counts[old] -= 1
                if self._positive_counts[old] <= 0:
                    del self._positive_counts[old]
            self._recent_positives.append(ex.item_id)
            self._positive_counts[ex.item_id] += 1

    def forget_user(self, user_id: str) -> int:
        """Drop a viewer's rows still waiting for a step (erasure); returns how many."""
        before = len(self.queue)
        self.queue = deque((c, r) for c, r in self.queue if r.example.user_id != user_id)
        return before - len(self.queue)

    def ready(self, clock: int) -> bool:
        """A full batch is waiting, or a partial one has waited ``max_wait_ms``."""
        if len(self.queue) >= self.cfg.batch_size:
            return True
        return bool(self.queue) and clock - self.queue[0][0] >= self.cfg.max_wait_ms

    def oldest_waiting_end(self) -> int | None:
        ends = [r.example.ended_ts for _, r in self.queue if r.example.ended_ts is not None]
        return min(ends) if ends else None

    # -- training ------------------------------------------------------------------------------
    def step(self) -> StepReport | None:
        """Train on up to ``batch_size`` waiting rows, oldest first."""
        if not self.queue:
            return None
        n = min(self.cfg.batch_size, len(self.queue))
        rows = [self.queue.popleft()[1] for _ in range(n)]
        rows = [r for r in rows if self.catalog.get(r.example.item_id) is not None]
        report = StepReport(len(rows), ended=[r.example.ended_ts for r in rows
                                              if r.example.ended_ts is not None])
        if not rows:
            return report
        full = len(rows) >= self.cfg.batch_size
        scale = 1.0 if full or not self.cfg.scale_partial else len(rows) / self.cfg.batch_size
        for opt, lr in ((self._ranker_opt, self.cfg.ranker_lr),
                        (self._retrieval_opt, self.cfg.retrieval_lr)):
            if opt is not None:
                for group in opt.param_groups:
                    frozen = group["dense"] and not full and not self.cfg.partial_dense
                    group["lr"] = 0.0 if frozen else lr * scale * group["share"]
        if self._ranker_opt is not None:
            report.ranker_loss = self._ranker_step(rows)
            if self._ranker_avg is not None:
                self._ranker_avg.update()
        if self._retrieval_opt is not None:
            report.retrieval_loss, report.retrieval_rows = self._retrieval_step(rows)
            if report.retrieval_rows:
                self.retrieval_steps += 1
                if self._retrieval_avg is not None:
                    self._retrieval_avg.update()
        self.steps += 1
        self.rows_trained += len(rows)
        marker = self._vocab_marker()
        if marker != self._vocab_seen:
            self._vocab_seen, self.vocab_changes = marker, self.vocab_changes + 1
        return report

    def _vocab_marker(self) -> tuple[int, int]:
        """Changes whenever an id of an item tower gets, loses or moves its row."""
        return tuple(sum(m.version for m in model.items.modules()
                         if isinstance(m, DynamicEmbedding)) if model is not None else 0
                     for model in (self.bundle.ranker, self.bundle.retrieval))

    def serving_meta(self, base_version: str) -> dict:
        """What serving may reuse from the version before: the item encodings stay valid
        while the item vocabularies are unchanged."""
        return {"ranker_items_version": f"{base_version}/items{self.vocab_changes}",
                "retrieval_items_version": f"{base_version}/items{self.vocab_changes}"}

    def _items(self, ids) -> tuple[list[Item], dict[str, int]]:
        items = []
        for i in dict.fromkeys(ids):
            it = self.catalog.get(i)
            if it is not None:
                items.append(it)
        return items, {it.item_id: k for k, it in enumerate(items)}

    def _ranker_step(self, rows: list[RankingRow]) -> float:
        ranker, cfg = self.bundle.ranker, self.cfg
        hist = [t.item_id for r in rows for t in r.history[-cfg.history_len:]]
        items, index = self._items([r.example.item_id for r in rows] + hist)
        ranker.items.observe(items)
        observe_context(ranker, rows)
        _sync(ranker, self._ranker_opt)
        table = build_table(rows, ranker, index, self._watch_quantiles(), cfg.history_len)
        idx = torch.arange(len(rows))
        ranker.train()
        ranker.dense_norm.eval()  # keep the batch run's statistics (see the module docstring)
        logits = ranker(table.batch(idx, ranker.items.encode_items(items), len(items)))  # (B, T)
        labels = table.labels  # (B, T)
        loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(0).sum()
        if cfg.pairwise_weight:
            users = torch.from_numpy(np.unique(np.array(table.user_ids), return_inverse=True)[1])
            loss = loss + cfg.pairwise_weight * pairwise_loss(
                logits, labels, users, torch.ones(len(ranker.tasks)))
        self._ranker_opt.zero_grad(set_to_none=True)
        loss.backward()
        self._ranker_opt.step()
        self._ranker_opt.zero_grad(set_to_none=True)  # nothing stale is copied with the model
        ranker.eval()
        return float(loss.item())

    def _retrieval_step(self, rows: list[RankingRow]) -> tuple[float | None, int]:
        model = self.bundle.retrieval
        max_len = model.users.max_len
        least = max(1, self.cfg.retrieval_min_history)
        pos = [r for r in rows if r.example.revision == 0 and token_from_example(r.example).positive
               and len(r.history) >= least]
        if not pos:
            return None, 0
        negatives = self._sample_negatives(self.cfg.negatives)
        hist = [t.item_id for r in pos for t in r.history[-max_len:]]
        items, index = self._items([r.example.item_id for r in pos] + negatives + hist)
        pos = [r for r in pos if r.example.item_id in index]
        if not pos:
            return None, 0
        model.items.observe(items)
        _sync(model, self._retrieval_opt)
        model.train()
        vectors = model.item_vectors(model.items.encode_items(items))  # (K, D)
        h = encode_histories([r.history for r in pos], index, max_len)
        keep = (h.items >= 0).any(dim=1)  # (B,) someone with a known history item
        if not keep.any():
            model.eval()
            return None, 0
        h = type(h)(h.items[keep], h.view[keep], h.flags[keep], h.gap[keep])
        users = model.user_vectors(h, vectors)  # (B', D)
        targets = torch.tensor([index[r.example.item_id] for r, k in zip(pos, keep.tolist()) if k])
        positives = torch.unique(targets)  # (P,)
        neg = torch.tensor([index[i] for i in negatives if i in index], dtype=torch.long)
        cand = torch.cat([positives, neg])  # (C,)
        log_q = torch.log(self._sample_probability([items[k].item_id for k in cand.tolist()]))
        target_idx = torch.searchsorted(positives, targets)
        self._retrieval_opt.zero_grad(set_to_none=True)
        least = self.cfg.retrieval_shared_min_history
        if least > 0:
            per_row = sampled_softmax_loss(users, target_idx, vectors[cand], cand, log_q,
                                           reduction="none")  # (B',)
            lengths = torch.tensor([len(r.history) for r, k in zip(pos, keep.tolist()) if k])
            short = lengths < least
            if short.any():  # their gradients reach every table but the shared ones
                (per_row[short].sum() / len(per_row)).backward(retain_graph=bool((~short).any()))
                for name, table in model.items.named_children():
                    if isinstance(table, DynamicEmbedding) and name != "item":
                        table.weight.grad = None
            if (~short).any():
                (per_row[~short].sum() / len(per_row)).backward()
            loss = per_row.mean()
        else:
            loss = sampled_softmax_loss(users, target_idx, vectors[cand], cand, log_q)
            loss.backward()
        self._retrieval_opt.step()
        self._retrieval_opt.zero_grad(set_to_none=True)
        model.eval()
        return float(loss.item()), int(keep.sum())

    def _sample_negatives(self, n: int) -> list[str]:
        """Half from recent positives (popularity), half uniform over the catalog."""
        if len(self._catalog_ids) != len(self.catalog):
            self._catalog_ids = self.catalog.ids()
        out = []
        if self._recent_positives:
            picks = self._rng.integers(0, len(self._recent_positives), n // 2)
            out += [self._recent_positives[k] for k in picks]
        if self._catalog_ids:
            picks = self._rng.integers(0, len(self._catalog_ids), n - len(out))
            out += [self._catalog_ids[k] for k in picks]
        return out

    def _sample_probability(self, ids: list[str]) -> torch.Tensor:
        """The chance ``_sample_negatives`` draws each id, for the log-Q correction."""
        total = len(self._recent_positives)
        uniform = 1.0 / max(1, len(self._catalog_ids))
        p = [(0.5 * self._positive_counts.get(i, 0) / total if total else 0.0)
             + (0.5 if total else 1.0) * uniform for i in ids]
        return torch.tensor(p, dtype=torch.float32).clamp(min=1e-12)

    def _watch_quantiles(self) -> WatchQuantiles:
        if self._quantiles is None or self._views_since_quantiles >= 2_000:
            views = np.array(self._views, dtype=np.int64).reshape(-1, 2)
            self._quantiles = WatchQuantiles(views[:, 0], views[:, 1].astype(np.float64))
            self._views_since_quantiles = 0
        return self._quantiles

    # -- output --------------------------------------------------------------------------------
    def serving_bundle(self, retrieval=None) -> ModelBundle:
        """A copy of the ranker for serving, with the given retrieval module (the learner's own
        modules keep changing, so they are never handed out)."""
        b = self.bundle
        ranker = snapshot(b.ranker, self._ranker_avg) if b.ranker is not None else None
        return ModelBundle(retrieval, dict(b.retrieval_kwargs), ranker, dict(b.ranker_kwargs),
                           dict(b.value_weights))

    def retrieval_snapshot(self):
        if self.bundle.retrieval is None:
            return None
        return snapshot(self.bundle.retrieval, self._retrieval_avg)


def snapshot(module: torch.nn.Module, average: WeightAverage | None = None) -> torch.nn.Module:
    """A deep copy in inference mode, holding ``average``'s weights where one is given. The
    dynamic tables' vocabularies copy their containers of ids shallowly
    (``IdVocabulary.__deepcopy__``: the ids are immutable), ten times faster than ``deepcopy``
    walking 100,000 ids (or a state_dict round trip)."""
    with torch.no_grad():
        copied = copy.deepcopy(module)
        if average is not None:
            average.copy_into(copied)
    return copied.eval()


def _optimizer(name: str, model: torch.nn.Module, lr: float, dense_share: float,
               shared_share: float = 1.0) -> torch.optim.Optimizer:
    """Two parameter groups: the dynamic embedding tables at ``lr``, the rest at
    ``lr * dense_share`` (``share`` is kept on each group for ``step``'s rescaling). With
    ``shared_share`` other than 1, the item tower's tables other than its per-video one
    (creator, sound, tags, words: rows shared by many videos) form a third group at
    ``lr * shared_share``."""
    tables = [m.weight for m in model.modules() if isinstance(m, DynamicEmbedding)]
    ids = {id(p) for p in tables}
    rest = [p for p in model.parameters() if id(p) not in ids]
    shared = []
    if shared_share != 1.0:
        own = model.items.item.weight
        shared = [p for p in tables if p is not own]
        tables = [own]
    groups = [{"params": tables, "lr": lr, "share": 1.0, "dense": False},
              {"params": rest, "lr": lr * dense_share, "share": dense_share, "dense": True}]
    if shared:
        groups.append({"params": shared, "lr": lr * shared_share, "share": shared_share,
                       "dense": False})
    kinds = {"adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad, "sgd": torch.optim.SGD}
    if name not in kinds:
        raise ValueError(f"unknown optimizer {name!r}: adam, adagrad or sgd")
    return kinds[name](groups, lr=lr)


def _sync(model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    """Fit the optimizer's per-row state to tables that admitted ids (see models.embeddings)."""
    for m in model.modules():
        if isinstance(m, DynamicEmbedding):
            m.sync_optimizer(opt)
