"""Training to convergence: early stopping keeps the best epoch, every token is trained on,
and a log with no impressions still trains retrieval (and, rightly, no ranker)."""

from __future__ import annotations

import numpy as np
import torch

from reelrank.train.epochs import EpochReport, run_epochs
from reelrank.train.retrieval import SequenceTable, _windows, hold_out_last_positives
from reelrank.types import Token


def _train_with_scores(scores: list[float], patience: int) -> tuple[EpochReport, list, float]:
    model = torch.nn.Linear(1, 1, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    weights = []

    def evaluate(m, epoch):
        weights.append(float(m.weight.detach()))
        return {"score": scores[epoch]}

    rep = run_epochs(model, opt, epochs=len(scores), steps_per_epoch=1,
                     batches=lambda e: [None], loss=lambda _b: model.weight.sum(),
                     report=EpochReport(), progress=False, evaluate=evaluate,
                     monitor="score", patience=patience)
    return rep, weights, float(model.weight.detach())


def test_early_stopping_keeps_the_best_epochs_weights():
    rep, weights, final = _train_with_scores([0.1, 0.5, 0.4, 0.3, 0.9], patience=2)
    assert rep.epochs == 4 and rep.best_epoch == 2 and "no better score" in rep.stopped
    assert final == weights[1] != weights[3]  # each SGD step moves the weight by -1


def test_without_a_measurable_score_every_epoch_runs():
    rep, weights, final = _train_with_scores([float("nan")] * 3, patience=1)
    assert rep.epochs == 3 and rep.best_epoch is None and final == weights[-1]


def test_the_weight_average_is_what_is_evaluated_and_kept():
    """SGD on loss = w with lr 1 moves w by -1 a step, so the raw weight after step t is
    w0 - t; the average is checked against a step-by-step reference, and training must go on
    from the raw weights after each epoch's evaluation, not from the average."""
    model = torch.nn.Linear(1, 1, bias=False)
    w0 = float(model.weight.detach())
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    seen = []

    def evaluate(m, epoch):
        seen.append(float(m.weight.detach()))
        return {"score": float(epoch)}  # every epoch is a new best: no early stop

    steps, decay = 7, 0.9
    run_epochs(model, opt, epochs=3, steps_per_epoch=steps, batches=lambda e: [None] * steps,
               loss=lambda _b: model.weight.sum(), report=EpochReport(), progress=False,
               evaluate=evaluate, monitor="score", average=decay)
    reference, average = [], w0
    for t in range(1, 3 * steps + 1):
        average += (1 - min(decay, (1 + t) / (10 + t))) * ((w0 - t) - average)
        if t % steps == 0:
            reference.append(average)
    assert np.allclose(seen, reference, atol=1e-5)
    assert abs(float(model.weight.detach()) - reference[-1]) < 1e-5
    assert reference[-1] > w0 - 3 * steps + 1  # the average lags the raw weight


def test_windows_cover_every_target_once():
    ends = np.array([1, 2, 5, 11])
    users, stops = _windows(ends, max_len=4)
    covered: dict[int, list[int]] = {}
    for u, e in zip(users.tolist(), stops.tolist()):
        s = max(0, e - 1 - 4)
        covered.setdefault(u, []).extend(range(s + 1, e))  # target positions of the window
    # user 0 (one token) has nothing to predict; the others: positions 1..n-1, once each
    assert 0 not in covered
    for u, n in ((1, 2), (2, 5), (3, 11)):
        assert sorted(covered[u]) == list(range(1, n))


def test_validation_holds_out_each_viewers_last_positive():
    def tok(i, positive):
        return Token(str(i), i, "long_view" if positive else "play", 1.0 if positive else 0.1,
                     0, 0, 0, 0, 0)

    table = SequenceTable.from_tokens(
        {"a": [tok(0, True), tok(1, False), tok(2, True), tok(3, False)],
         "b": [tok(0, True)], "c": [tok(1, False), tok(4, True)]},
        {str(i): i for i in range(5)})
    users, keep, target, later = hold_out_last_positives(table, 10, np.random.default_rng(0))
    assert users.tolist() == [0, 2] and keep.tolist() == [2, 1] and target.tolist() == [2, 4]
    assert [x.tolist() for x in later] == [[2], [4]]


def test_validation_tail_holds_out_the_last_part_of_each_history():
    def tok(i, positive):
        return Token(str(i), i, "long_view" if positive else "play", 1.0 if positive else 0.1,
                     0, 0, 0, 0, 0)

    # a: 10 tokens, the last 30% (positions 7..9) held out: positives 7 (seen before: 1) and 9;
    # b: its only positive after the cut is one it had already watched: nothing new to find.
    a = [tok(i, i in (1, 4, 9)) for i in range(7)] + [tok(1, True), tok(8, False), tok(9, True)]
    b = [tok(3, True), tok(5, False), tok(3, True)]
    table = SequenceTable.from_tokens({"a": a, "b": b}, {str(i): i for i in range(10)})
    users, keep, target, later = hold_out_last_positives(table, 10, np.random.default_rng(0),
                                                         tail=0.3)
    assert users.tolist() == [0] and keep.tolist() == [7] and target.tolist() == [1]
    assert [x.tolist() for x in later] == [[9]]


def test_future_targets_draw_a_positive_from_the_coming_tokens():
    def tok(i, positive):
        return Token(str(i % 10), i, "long_view" if positive else "play",
                     1.0 if positive else 0.1, 0, 0, 0, 0, 0)

    rng = np.random.default_rng(3)
    flags = rng.random(40) < 0.3
    table = SequenceTable.from_tokens({"a": [tok(i, bool(f)) for i, f in enumerate(flags)]},
                                      {str(i): i for i in range(10)})
    users = np.array([0])
    # future 1 is the next token's item when positive: the targets the trainer always used
    _, t1 = table.window(users, 8, ends=np.array([30]))
    _, t1b = table.window(users, 8, ends=np.array([30]), future=1, reach=np.array([40]),
                          rng=np.random.default_rng(0))
    assert torch.equal(t1, t1b)
    # future 5, reach 34: each input position i's target is a positive in (i, min(i+5, 33)]
    # and -1 exactly where that span holds none; several draws cover more than one of them.
    seen: dict[int, set[int]] = {}
    for seed in range(30):
        _, t5 = table.window(users, 8, ends=np.array([30]), future=5, reach=np.array([34]),
                             rng=np.random.default_rng(seed))
        inputs = range(30 - 1 - 8, 30 - 1)  # tokens 21..28 are the window's inputs
        for p, i in enumerate(inputs):
            span = [j for j in range(i + 1, min(i + 5, 33) + 1) if flags[j]]
            got = int(t5[0, p])
            if not span:
                assert got == -1
            else:
                assert got in {j % 10 for j in span}
                seen.setdefault(i, set()).add(got)
    assert any(len(v) > 1 for v in seen.values())


def test_the_weight_average_follows_a_table_that_grew():
    from reelrank.train.epochs import WeightAverage

    table = torch.nn.Embedding(3, 2)
    average = WeightAverage(table, 0.9)
    average.update()
    before = average.shadow[0].clone()
    table.weight.data = torch.cat([table.weight.data, torch.ones(2, 2)])  # two new rows
    average.update()
    kept = 1 - min(0.9, 3 / 12)  # the second step's weight
    assert average.shadow[0].shape == (5, 2)
    assert torch.allclose(average.shadow[0][:3], before + kept * (table.weight[:3].detach() - before))
    assert torch.allclose(average.shadow[0][3:], torch.ones(2, 2))  # new rows: their own values
