"""The epoch loop both batch trainers share (retrieval and ranker).

Each trainer says how to cut an epoch into batches and how to compute a batch's loss; this
loop does the rest the same way for both: Adam steps, the mean loss per epoch, progress (a
bar and a 0..1 callback for the jobs API), an optional evaluation after each epoch, and the
time budget, checked between epochs.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from tqdm.auto import tqdm

log = logging.getLogger(__name__)


@dataclass
class EpochReport:
    epochs: int = 0
    steps: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)  # mean loss per epoch
    evals: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    best_epoch: int | None = None  # with early stopping: the epoch whose weights were kept
    popularity: dict | None = None  # retrieval: the popularity prior chosen on validation
    co_engagement: dict | None = None  # retrieval: the co-engagement weight chosen on it
    trending: dict | None = None  # retrieval: the trending weight chosen on it
    stopped: str = ""  # why training ended before ``epochs``, if it did


def run_epochs(model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, epochs: int,
               steps_per_epoch: int, batches: Callable[[int], Iterable[Any]],
               loss: Callable[[Any], torch.Tensor | None], report: EpochReport,
               time_budget_s: float | None = None, name: str = "train",
               progress: bool = True, on_progress: Callable[[float], None] | None = None,
               evaluate: Callable[[torch.nn.Module, int], dict] | None = None,
               monitor: str | None = None, patience: int = 2,
               average: float | None = None) -> EpochReport:
    """Train ``model`` in place: for each epoch, ``loss(batch)`` over ``batches(epoch)`` (a
    batch whose loss is None is skipped) and one optimizer step per batch.

    Early stopping: with ``monitor`` (a key of ``evaluate``'s result, higher is better),
    training stops after ``patience`` epochs without a new best, and the model is left with
    the weights of its best epoch (``report.best_epoch``). A NaN or missing value never counts
    as a best, so a validation set with nothing to measure trains all ``epochs``.

    ``average`` (a decay in (0, 1)): the model evaluated, kept and returned is an exponential
    moving average of the weights over the optimizer's steps (``WeightAverage``), not the
    weights of the last step."""
    averaged = WeightAverage(model, average) if average else None
    total = max(1, steps_per_epoch * epochs)
    bar = tqdm(total=total, disable=not progress, desc=name, unit="step")
    started = time.perf_counter()
    best, best_state, since_best = None, None, 0
    model.train()
    for epoch in range(epochs):
        epoch_loss, n = 0.0, 0
        for batch in batches(epoch):
            value = loss(batch)
            if value is None:
                continue
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            if averaged is not None:
                averaged.update()
            epoch_loss += value.item()
            n += 1
            report.steps += 1
            bar.update(1)
            if on_progress:
                on_progress(min(1.0, report.steps / total))
        report.losses.append(epoch_loss / max(1, n))
        report.epochs = epoch + 1
        bar.set_postfix(loss=f"{report.losses[-1]:.3f}")
        if averaged is not None:
            averaged.swap()  # evaluated and kept as the average; swapped back to train on
        if evaluate is not None:
            metrics = evaluate(model, epoch)
            report.evals.append({"epoch": epoch + 1, **metrics})
            log.info("%s epoch %d loss %.4f %s", name, epoch + 1, report.losses[-1],
                     {k: v for k, v in metrics.items() if not isinstance(v, dict)})
            value = metrics.get(monitor) if monitor is not None else None
            if value is not None and value == value:
                if best is None or value > best:
                    best, since_best, report.best_epoch = value, 0, epoch + 1
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    since_best += 1
                    if since_best >= patience:
                        report.stopped = f"no better {monitor} for {patience} epochs"
                        log.info("%s: early stop after %d epochs (best: epoch %d, %s %.4f)",
                                 name, epoch + 1, report.best_epoch, monitor, best)
                        break
        if time_budget_s is not None and time.perf_counter() - started > time_budget_s:
            log.info("%s: time budget reached after %d epochs", name, epoch + 1)
            report.stopped = f"time budget of {time_budget_s:g} s"
            break
        if averaged is not None and epoch + 1 < epochs:
            averaged.swap()  # train on from the last step's weights
    bar.close()
    if best_state is not None and report.best_epoch != report.epochs:
        model.load_state_dict(best_state)
    report.seconds = time.perf_counter() - started
    return report


class WeightAverage:
    """An exponential moving average of a model's parameters over optimizer steps (Polyak
    averaging): ``update`` after each step, ``swap`` exchanges the model's weights with the
    average (twice: back again). The decay ramps up as (1 + t) / (10 + t) over the first
    steps, so early weights do not dominate a short run. Buffers (batch-norm statistics) are
    the model's own."""

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"average must be in (0, 1), got {decay}")
        self.params = _trainable(model)
        self.shadow = [p.detach().clone() for p in self.params]
        self.decay = decay
        self.steps = 0

    @torch.no_grad()
    def update(self) -> None:
        self.steps += 1
        weight = 1.0 - min(self.decay, (1 + self.steps) / (10 + self.steps))
        for p, s in zip(self.params, self.shadow):
            self._follow(p, s)
            s.lerp_(p.detach(), weight)

    @torch.no_grad()
    def swap(self) -> None:
        for p, s in zip(self.params, self.shadow):
            self._follow(p, s)
            tmp = p.detach().clone()
            p.copy_(s)
            s.copy_(tmp)

    @torch.no_grad()
    def copy_into(self, copy: torch.nn.Module) -> None:
        """Write the average into ``copy``, a copy of the averaged model."""
        for p, s in zip(_trainable(copy), self.shadow):
            self._follow(p, s)
            p.copy_(s)

    @staticmethod
    def _follow(p: torch.Tensor, s: torch.Tensor) -> None:
        """An embedding table that grew (``DynamicEmbedding`` resizes its weight in place):
        the average keeps its rows and takes the new rows' current values."""
        if s.shape != p.shape:
            grown = p.detach().clone()
            if s.dim() == p.dim() and s.shape[1:] == p.shape[1:] and s.shape[0] <= p.shape[0]:
                grown[:s.shape[0]] = s
            s.data = grown


def _trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters an average covers, in the model's order."""
    return [p for p in model.parameters() if p.requires_grad]
