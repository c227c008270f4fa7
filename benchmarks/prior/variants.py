"""Step 2 of the popularity-prior study: Recall@50/100 of the test days' long views (catalog
minus what the viewer was shown before the cut-off) for the retrieval logits of step 1 plus
priors of several weights and popularity windows. Every test viewer of the retrieval protocol.

    python benchmarks/prior/variants.py KUAIRAND_DIR OUT_PREFIX
"""
import pickle
import sys

import numpy as np

from reelrank.eval.protocols import load_dataset
from reelrank.types import DAY_MS, is_long_view

folder, prefix = sys.argv[1], sys.argv[2]
L = np.load(prefix + "_logits.npy")
S = pickle.load(open(prefix + "_split.pkl", "rb"))
dur = {it.item_id: it.duration_ms for it in load_dataset(f"kuairand:{folder}").items}
idx = {x: k for k, x in enumerate(S["item_ids"])}
n_items, cut = len(S["item_ids"]), S["cutoff"]
seen, targets = S["seen"], S["targets"]


def counts(kind: str, since: int | None = None, half: int | None = None) -> np.ndarray:
    """Per item: long views and likes ("pos") or impressions ("imp") before the cut-off, in the
    last ``since`` ms only, or decayed with half-life ``half`` ms."""
    c = np.zeros(n_items)
    for _u, i, t, ts, w in S["train_events"]:
        k = idx.get(i)
        if k is None or (since is not None and ts < cut - since):
            continue
        if kind == "pos":
            ok = t == "like" or (t == "play" and w is not None and w > 0
                                 and is_long_view(w, dur.get(i) or 0))
        else:
            ok = t == "impression"
        if ok:
            c[k] += 1.0 if half is None else 0.5 ** ((cut - ts) / half)
    return c


def recall(scores: np.ndarray) -> dict:
    out: dict = {50: [], 100: []}
    for r in range(len(scores)):
        s = scores[r].copy()
        s[seen[r]] = -np.inf
        top = np.argpartition(-s, 100)[:100]
        top = top[np.argsort(-s[top])]
        for k in out:
            out[k].append(len(np.intersect1d(top[:k], targets[r])) / len(targets[r]))
    return {f"R@{k}": round(float(np.mean(v)), 4) for k, v in out.items()}


logits = np.where(np.isfinite(L), L, -1e9)
pos = np.log1p(counts("pos"))
print(f"viewers {len(L)}; the version's own prior weight {S['prior']}")
print("| scores | Recall@50 | Recall@100 |\n|---|---|---|")


def row(name: str, scores: np.ndarray) -> None:
    r = recall(scores)
    print(f"| {name} | {r['R@50']} | {r['R@100']} |", flush=True)


row("popularity alone: log(1 + long views and likes)", pos[None, :] + 0 * logits)
for w in (0, 0.25, 0.5, 1, 1.5, 2, 3):
    row(f"logit + {w} x log popularity", logits + w * pos[None, :])
z = (logits - logits.mean(1, keepdims=True)) / (logits.std(1, keepdims=True) + 1e-6)
zp = (pos - pos.mean()) / pos.std()
for w in (0.5, 1, 2):
    row(f"per-viewer z-scored logit + {w} x z-scored log popularity", z + w * zp[None, :])
for days in (1, 2, 3):
    c = np.log1p(counts("pos", since=days * DAY_MS))
    for w in (0.5, 1, 2):
        row(f"logit + {w} x log popularity of the last {days} day(s)", logits + w * c[None, :])
for days in (1, 2):
    c = np.log1p(counts("pos", half=days * DAY_MS))
    for w in (0.5, 1, 2):
        row(f"logit + {w} x log popularity decayed, half-life {days} day(s)",
            logits + w * c[None, :])
last = np.log1p(counts("pos", since=DAY_MS))
for a, b in ((1, 1), (0.5, 2), (2, 1)):
    row(f"logit + {a} x log popularity + {b} x log popularity of the last day",
        logits + a * pos[None, :] + b * last[None, :])
for w in (0.5, 1):
    row(f"logit + {w} x log impressions", logits + w * np.log1p(counts("imp"))[None, :])
