"""Training the two-tower retrieval model from viewers' token histories.

Every position of every history is a training target at once (the next positive video). An
epoch covers every token: a history longer than ``max_len`` is cut into consecutive windows,
each one training example. When the catalog is small enough for the batch's logits to fit
(``full_softmax_logits``), each target is scored against the whole catalog (plain
cross-entropy, which learns popularity as well as taste); otherwise against the batch's own
positives plus shared negatives sampled by popularity, with log-Q correction
(models/losses.py). Histories are packed once into flat arrays (``SequenceTable``) so that a
batch is a few numpy slices, not Python loops over events.

With ``validation_users`` > 0, the last positive of that many viewers is held out, Recall@100
and NDCG@10 of it are measured after each epoch (the whole catalog minus what the viewer saw
ranked), and training stops when NDCG@10 has not improved for ``patience`` epochs, keeping
the best epoch's weights.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from reelrank.types import Token
from reelrank.models.losses import full_softmax_loss, sampled_softmax_loss
from reelrank.models.retrieval import (
    FLAGS, HistoryInputs, ItemInputs, TwoTower, gap_bucket, view_bucket,
)
from reelrank.train.epochs import EpochReport, run_epochs
from reelrank.types import Item

log = logging.getLogger(__name__)


@dataclass
class RetrievalConfig:
    dim: int = 64
    max_len: int = 50
    layers: int = 2
    heads: int = 2
    dropout: float = 0.3
    use_content: bool = True
    content_fields: tuple[str, ...] = ("creator", "sound", "tags", "duration", "words")
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    negatives: int = 2048
    negative_power: float = 0.75  # negatives ~ count^power
    epochs: int = 20
    time_budget_s: float | None = None
    seed: int = 0
    # Score each target against the whole catalog when (targets in the batch) x (catalog)
    # stays under this many logits; 0 always samples.
    full_softmax_logits: int = 40_000_000
    # ... and the catalog is at most this large: on 2 cores the whole-catalog product of the
    # 54,542-item Amazon Beauty catalog made an epoch take 9 minutes instead of 20 s sampled,
    # so the time budget stopped training after 2 epochs (benchmarks/results/eval-beauty-full).
    full_softmax_items: int = 20_000
    validation_users: int = 0  # viewers whose last positive is held out for early stopping
    patience: int = 2
    # With > 0, each validation viewer's last ``validation_tail`` of tokens (at least their last
    # positive) is held out, not only the last positive: early stopping still watches the
    # first held-out positive; the held-out positives as a set measure what a feed built at
    # the cut must hold over the viewer's coming sessions (``tail_recall@50``).
    validation_tail: float = 0.0
    # Each position learns to predict a positive drawn from the next ``future_targets`` tokens
    # (1: the next token only). A feed is judged over the viewer's coming sessions, not their
    # very next video: a wider window trains for that horizon (a "dense all-action" target).
    future_targets: int = 1
    # What the popularity prior's weight is chosen on: "ndcg@10" (the next video near the top)
    # or "tail_recall@50"; pages of 50+ have their own weight, chosen on "tail_recall@50".
    popularity_criterion: str = "ndcg@10"

    def model(self) -> TwoTower:
        return TwoTower(self.dim, self.max_len, self.layers, self.heads, self.dropout,
                        use_content=self.use_content, content_fields=self.content_fields)


@dataclass
class SequenceTable:
    """All histories as flat arrays: user u's tokens are ``[offsets[u], offsets[u+1])``."""

    user_ids: list[str]
    offsets: np.ndarray  # (U+1,) int64
    item: np.ndarray  # (T,) int64 catalog index
    view: np.ndarray  # (T,) int64
    flags: np.ndarray  # (T, F) float32
    gap: np.ndarray  # (T,) int64
    positive: np.ndarray  # (T,) bool

    @classmethod
    def from_tokens(cls, histories: Mapping[str, Sequence[Token]],
                    item_index: Mapping[str, int]) -> "SequenceTable":
        user_ids, offsets = [], [0]
        item, view, flags, gap, positive = [], [], [], [], []
        for user, toks in histories.items():
            prev = None
            kept = 0
            for t in toks:
                idx = item_index.get(t.item_id)
                if idx is None:
                    continue
                item.append(idx)
                kind = "play" if t.event_type == "long_view" else t.event_type
                view.append(view_bucket(kind, t.watch_ratio))
                flags.append([getattr(t, f) for f in FLAGS])
                gap.append(gap_bucket(t.ts - prev) if prev is not None else 0)
                positive.append(t.positive)
                prev = t.ts
                kept += 1
            user_ids.append(user)
            offsets.append(offsets[-1] + kept)
        return cls(user_ids, np.asarray(offsets, dtype=np.int64),
                   np.asarray(item, dtype=np.int64), np.asarray(view, dtype=np.int64),
                   np.asarray(flags, dtype=np.float32).reshape(-1, len(FLAGS)),
                   np.asarray(gap, dtype=np.int64), np.asarray(positive, dtype=bool))

    def __len__(self) -> int:
        return len(self.user_ids)

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def _future_targets(self, s: int, end: int, last: int, future: int,
                        rng: np.random.Generator) -> np.ndarray:
        """For each input token i in [s, end-1): the item of a positive token drawn uniformly
        from (i, min(i + future, last - 1)], or -1 where that span holds no positive."""
        pos = s + 1 + np.flatnonzero(self.positive[s + 1:last])  # positive token indices
        inputs = np.arange(s, end - 1)
        lo = np.searchsorted(pos, inputs, side="right")
        hi = np.searchsorted(pos, np.minimum(inputs + future, last - 1), side="right")
        count = hi - lo
        pick = lo + np.floor(rng.random(len(inputs)) * count).astype(np.int64)
        out = np.full(len(inputs), -1, dtype=np.int64)
        has = count > 0
        out[has] = self.item[pos[pick[has]]]
        return out

    def window(self, users: np.ndarray, max_len: int, ends: np.ndarray | None = None,
               with_targets: bool = True, future: int = 1, reach: np.ndarray | None = None,
               rng: np.random.Generator | None = None) -> tuple[HistoryInputs, torch.Tensor | None]:
        """Left-padded inputs for each user's tokens before ``ends`` (default: all of them);
        with targets, position p's target is the next token's item if it is positive, else -1.
        With ``future`` > 1 it is a positive drawn (with ``rng``) from the next ``future``
        tokens before ``reach`` (per user, counted from their first token; default ``ends``),
        -1 where they hold none."""
        B = len(users)
        items = np.full((B, max_len), -1, dtype=np.int64)
        view = np.zeros((B, max_len), dtype=np.int64)
        flags = np.zeros((B, max_len, self.flags.shape[1]), dtype=np.float32)
        gap = np.zeros((B, max_len), dtype=np.int64)
        targets = np.full((B, max_len), -1, dtype=np.int64) if with_targets else None
        for b, u in enumerate(users):
            start, stop = self.offsets[u], self.offsets[u + 1]
            end = stop if ends is None else start + ends[b]
            if with_targets:
                # Inputs are tokens [s, end-1), targets the tokens [s+1, end).
                s = max(start, end - 1 - max_len)
                n = end - 1 - s
                if n <= 0:
                    continue
                if future > 1:
                    last = end if reach is None else start + reach[b]
                    targets[b, max_len - n:] = self._future_targets(s, end, last, future, rng)
                else:
                    nxt = slice(s + 1, end)
                    targets[b, max_len - n:] = np.where(self.positive[nxt], self.item[nxt], -1)
                src = slice(s, end - 1)
            else:
                s = max(start, end - max_len)
                n = end - s
                if n <= 0:
                    continue
                src = slice(s, end)
            items[b, max_len - n:] = self.item[src]
            view[b, max_len - n:] = self.view[src]
            flags[b, max_len - n:] = self.flags[src]
            gap[b, max_len - n:] = self.gap[src]
        h = HistoryInputs(torch.from_numpy(items), torch.from_numpy(view),
                          torch.from_numpy(flags), torch.from_numpy(gap))
        return h, (torch.from_numpy(targets) if with_targets else None)


TrainReport = EpochReport  # what train_retrieval returns


def encode_catalog(model: TwoTower, items: Sequence[Item]) -> ItemInputs:
    """Admit the catalog's ids into the model's tables, then encode every item."""
    model.items.observe(items)
    return model.items.encode_items(items)


def item_matrix(model: TwoTower, catalog: ItemInputs, chunk: int = 65536) -> torch.Tensor:
    """(I, D) vectors of the whole catalog, in inference mode."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = torch.cat([model.item_vectors(catalog[torch.arange(s, min(s + chunk, len(catalog)))])
                         for s in range(0, len(catalog), chunk)])
    model.train(was_training)
    return out


def user_matrix(model: TwoTower, table: SequenceTable, users: np.ndarray, items: torch.Tensor,
                max_len: int, chunk: int = 1024) -> torch.Tensor:
    """(len(users), D) vectors after each user's whole history, in inference mode."""
    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(users), chunk):
            h, _ = table.window(users[s:s + chunk], max_len, with_targets=False)
            out.append(model.user_vectors(h, items))
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros((0, items.shape[1]))


def train_retrieval(model: TwoTower, catalog: ItemInputs, table: SequenceTable,
                    cfg: RetrievalConfig, *, progress: bool = True,
                    evaluate: Callable[[TwoTower, int], dict] | None = None,
                    on_progress: Callable[[float], None] | None = None) -> TrainReport:
    """Train in place; ``evaluate(model, epoch)`` runs after each epoch when given (else, with
    ``cfg.validation_users``, the held-out last positives are measured and drive early
    stopping)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    n_items = len(catalog)
    ends = np.diff(table.offsets).copy()  # per user: tokens used for training
    monitor = None
    if evaluate is None and cfg.validation_users > 0:
        held = hold_out_last_positives(table, cfg.validation_users, rng, cfg.validation_tail)
        if len(held[0]):
            ends[held[0]] = held[1]
            evaluate = lambda m, _epoch: validation_metrics(m, catalog, table, held, cfg.max_len)
            monitor = "ndcg@10"
    counts = np.bincount(table.item[table.positive], minlength=n_items).astype(np.float64)
    q = (counts + 1.0) ** cfg.negative_power
    q /= q.sum()
    log_q = torch.from_numpy(np.log(q)).float()
    users, stops = _windows(ends, cfg.max_len)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def loss(batch: np.ndarray) -> torch.Tensor | None:
        width = int(min(cfg.max_len, stops[batch].max() - 1))
        h, targets = table.window(users[batch], width, ends=stops[batch],
                                  future=cfg.future_targets, reach=ends[users[batch]], rng=rng)
        valid = targets >= 0
        if not valid.any():
            return None
        if (n_items <= cfg.full_softmax_items
                and int(valid.sum()) * n_items <= cfg.full_softmax_logits):
            return _full_loss(model, catalog, h, targets, valid)
        negs = torch.from_numpy(rng.choice(n_items, size=cfg.negatives, p=q))
        return _step_loss(model, catalog, h, targets, valid, negs, log_q, n_items)

    lengths = np.minimum(stops, cfg.max_len + 1)
    report = run_epochs(model, opt, epochs=cfg.epochs,
                        steps_per_epoch=max(1, math.ceil(len(users) / cfg.batch_size)),
                        batches=lambda epoch: _length_buckets(np.arange(len(users)), lengths,
                                                              cfg.batch_size, rng),
                        loss=loss, report=TrainReport(config=asdict(cfg)),
                        time_budget_s=cfg.time_budget_s, name="retrieval", progress=progress,
                        on_progress=on_progress, evaluate=evaluate, monitor=monitor,
                        patience=cfg.patience)
    if monitor is not None:
        # Popularity as the training part knew it: without the held-out positives.
        known = counts - np.bincount(held_positives(table, held), minlength=n_items)
        report.popularity = popularity_weight(model, catalog, table, held, cfg.max_len,
                                              np.log1p(known), cfg.popularity_criterion)
    return report


POPULARITY_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0)


def popularity_weight(model: TwoTower, catalog: ItemInputs, table: SequenceTable, held,
                      max_len: int, log_popularity: np.ndarray,
                      criterion: str = "ndcg@10") -> dict:
    """The weight of log(1 + positives) added to the retrieval logit that ranks the held-out
    positives best (by ``criterion``, a key of ``validation_metrics``). The softmax already
    learns popularity for the next video; a feed that must also hold what the viewer will enjoy
    over the coming days may want more of it. Returns the weight and every weight's figures."""
    tried = {w: validation_metrics(model, catalog, table, held, max_len,
                                   prior=w * log_popularity) for w in POPULARITY_WEIGHTS}
    best = max(POPULARITY_WEIGHTS, key=lambda w: (tried[w][criterion], -w))
    out = {"weight": best, "tried": {str(w): {k: round(v, 4) for k, v in m.items()}
                                     for w, m in tried.items()}}
    if all("tail_recall@50" in m for m in tried.values()):
        # A page of 50 is judged by what it holds, not by its top: its own weight.
        out["weight@50"] = max(POPULARITY_WEIGHTS, key=lambda w: (tried[w]["tail_recall@50"], -w))
    return out


def _windows(ends: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(user, end) of every training window, ``end`` counted in tokens from the start of the
    user's history: each history's first ``ends[u]`` tokens cut from the newest backwards into
    windows of ``max_len`` targets (plus one input token before them), so every token is a
    target once per epoch."""
    users, stops = [], []
    for u, n in enumerate(ends.tolist()):
        end = n
        while end >= 2:
            users.append(u)
            stops.append(end)
            end -= max_len
    users_arr = np.asarray(users, dtype=np.int64)
    return users_arr, np.asarray(stops, dtype=np.int64)


def hold_out_last_positives(table: SequenceTable, n_users: int, rng: np.random.Generator,
                            tail: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                        list[np.ndarray]]:
    """A seeded sample of at most ``n_users`` viewers with a positive after at least one other
    token: (users, tokens kept before the held-out part, the first held-out positive, and the
    held-out positives as a set). With ``tail`` 0 only the last positive is held out; with
    ``tail`` > 0 every token from the last ``tail`` of the history on (and at least from the
    last positive on) is, and the set holds its distinct positives not seen before the cut.
    The positives of a held-out viewer after the cut feed no training: they are the future."""
    users, keep, target, later = [], [], [], []
    for u in range(len(table)):
        start, stop = table.offsets[u], table.offsets[u + 1]
        pos = np.flatnonzero(table.positive[start:stop])
        if not len(pos) or pos[-1] < 1:
            continue
        cut = int(pos[-1])
        if tail > 0:
            cut = min(cut, max(1, int(math.floor((stop - start) * (1.0 - tail)))))
            after = pos[pos >= cut]
            seen = set(table.item[start:start + cut].tolist())
            items = [i for i in dict.fromkeys(table.item[start + after].tolist()) if i not in seen]
            if not items:
                continue
        else:
            items = [int(table.item[start + cut])]
        first = int(pos[pos >= cut][0])
        users.append(u)
        keep.append(cut)
        target.append(int(table.item[start + first]))
        later.append(np.asarray(items, dtype=np.int64))
    users_a, keep_a, target_a = (np.asarray(x, dtype=np.int64) for x in (users, keep, target))
    if len(users_a) > n_users:
        pick = np.sort(rng.choice(len(users_a), n_users, replace=False))
        users_a, keep_a, target_a = users_a[pick], keep_a[pick], target_a[pick]
        later = [later[i] for i in pick]
    return users_a, keep_a, target_a, later


def held_positives(table: SequenceTable, held) -> np.ndarray:
    """Every positive token of the held-out viewers from their cut on (repeats included): what
    the training part of the histories did not see."""
    parts = [np.zeros(0, dtype=np.int64)]
    for u, k in zip(held[0].tolist(), held[1].tolist()):
        start, stop = table.offsets[u], table.offsets[u + 1]
        part = slice(start + k, stop)
        parts.append(table.item[part][table.positive[part]])
    return np.concatenate(parts)


def validation_metrics(model: TwoTower, catalog: ItemInputs, table: SequenceTable,
                       held: tuple[np.ndarray, np.ndarray, np.ndarray], max_len: int,
                       chunk: int = 512, prior: np.ndarray | None = None) -> dict:
    """Recall@100 and NDCG@10 of each held-out positive, ranked over the whole catalog minus
    the items the viewer had before it; ``prior`` (I,) is added to every viewer's scores. With
    the held-out sets (``hold_out_last_positives``' fourth part), also ``tail_recall@50`` (the
    share of each viewer's set in their top 50, averaged over viewers) and ``tail_ndcg@10``."""
    users, keep, target = held[:3]
    later = held[3] if len(held) > 3 else None
    vectors = item_matrix(model, catalog)
    bias = torch.from_numpy(prior).float() if prior is not None else None
    was_training = model.training
    model.eval()
    ranks, tail_recall, tail_ndcg = [], [], []
    discount = 1.0 / np.log2(np.arange(10) + 2)
    with torch.no_grad():
        for s in range(0, len(users), chunk):
            part = slice(s, s + chunk)
            h, _ = table.window(users[part], max_len, ends=keep[part], with_targets=False)
            scores = model.user_vectors(h, vectors) @ vectors.T  # (B, I)
            if bias is not None:
                scores = scores + bias
            for row, u in enumerate(users[part]):
                start = table.offsets[u]
                seen = table.item[start:start + keep[part][row]]
                t = target[part][row]
                mask = np.zeros(scores.shape[1], dtype=bool)
                mask[seen] = True
                mask[t] = False
                sc = scores[row].numpy()
                ranks.append(int((sc[~mask] > sc[t]).sum()))
                if later is not None:
                    want = later[s + row]
                    masked = sc.copy()
                    masked[seen] = -np.inf  # the held-out set holds nothing seen before
                    top = np.argpartition(-masked, 50)[:50] if len(masked) > 50 else np.arange(len(masked))
                    top = top[np.argsort(-masked[top], kind="stable")]
                    hit = np.isin(top, want)
                    tail_recall.append(hit.sum() / len(want))
                    ideal = discount[:min(10, len(want))].sum()
                    tail_ndcg.append(float((hit[:10] * discount[:len(hit[:10])]).sum() / ideal))
    model.train(was_training)
    r = np.asarray(ranks)
    out = {"recall@100": float(np.mean(r < 100)) if len(r) else float("nan"),
           "ndcg@10": float(np.mean(np.where(r < 10, 1.0 / np.log2(r + 2), 0.0)))
           if len(r) else float("nan"), "users": int(len(r))}
    if later is not None and tail_recall:
        out["tail_recall@50"] = float(np.mean(tail_recall))
        out["tail_ndcg@10"] = float(np.mean(tail_ndcg))
    return out


def _full_loss(model: TwoTower, catalog: ItemInputs, h: HistoryInputs, targets: torch.Tensor,
               valid: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each target over the whole catalog."""
    vec = model.item_vectors(catalog)  # (I, D)
    out = model.users(h, vec)  # (B, L, D)
    return full_softmax_loss(out[valid], vec, targets[valid])


def _length_buckets(users: np.ndarray, lengths: np.ndarray, batch_size: int,
                    rng: np.random.Generator) -> list[np.ndarray]:
    """Batches of users with similar history lengths, in random order: most histories are
    short, and padding every batch to the longest one would multiply the transformer's work."""
    order = users[np.lexsort((rng.random(len(users)), lengths[users]))]
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _step_loss(model: TwoTower, catalog: ItemInputs, h: HistoryInputs, targets: torch.Tensor,
               valid: torch.Tensor, negs: torch.Tensor, log_q: torch.Tensor,
               n_items: int) -> torch.Tensor:
    """Encode only the items this batch touches, then the sampled softmax over
    [the batch's positives, the sampled negatives]."""
    hist_items = h.items[h.items >= 0]
    positives = torch.unique(targets[valid])  # (P,)
    need = torch.unique(torch.cat([hist_items, positives, negs]))  # (K,)
    where = torch.full((n_items,), -1, dtype=torch.long)
    where[need] = torch.arange(len(need))
    vec = model.item_vectors(catalog[need])  # (K, D)
    local = HistoryInputs(torch.where(h.items >= 0, where[h.items.clamp(min=0)], h.items),
                          h.view, h.flags, h.gap)
    out = model.users(local, vec)  # (B, L, D)
    u = out[valid]  # (N, D)
    cand_ids = torch.cat([positives, negs])  # (C,)
    cand_vec = vec[where[cand_ids]]  # (C, D)
    target_idx = torch.searchsorted(positives, targets[valid])  # (N,) index into positives
    return sampled_softmax_loss(u, target_idx, cand_vec, cand_ids, log_q[cand_ids])
