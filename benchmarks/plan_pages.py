"""What a feed plan saves and changes, in-process (no HTTP): the CPU of a page cut from a plan
against one built afresh, and how far a viewer's next pages from a plan differ from the pages
the whole pipeline builds.

Loads an ``Engine`` on a copy of a world (the one ``bench_throughput.py`` builds) twice, with
feed plans on and off, and asks each the same pages: ``--viewers`` random known viewers,
``--pages`` pages of ``--n`` items each in a row, no event in between. Reports CPU time per page
(``time.process_time``) by kind (built afresh, cut from a plan) and, for the pages after the
first, the share of items both engines served at the same position and anywhere on the same
page, and the mean score of what each served. Exploration samples (Thompson draws) differ
between the two engines once they have been asked a different number of times, which moves
some items on its own.

    python benchmarks/plan_pages.py --world /tmp/rr-throughput-world-20000-2000-7
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reelrank.engine import Engine  # noqa: E402
from reelrank.pipeline.context import FeedRequest  # noqa: E402
from reelrank.pipeline.plans import FeedPlans  # noqa: E402
from reelrank.pipeline.served import default_pipeline  # noqa: E402
from reelrank.registry import ModelRegistry  # noqa: E402
from reelrank.store import open_store  # noqa: E402
from reelrank.types import EXPLORATION_CODES  # noqa: E402


def deep_size(obj, seen: set | None = None) -> int:
    """Bytes held by ``obj`` and what it references (each object once; the strings it shares
    with the catalog counted too, so an upper bound)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, type):
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        size += sum(deep_size(x, seen) for x in obj)
    elif hasattr(obj, "__dict__"):
        size += deep_size(vars(obj), seen)
    elif hasattr(obj, "__slots__"):
        size += sum(deep_size(getattr(obj, a), seen) for a in obj.__slots__ if hasattr(obj, a))
    return size


def serve(world: Path, plans: bool, sessions: list[str], pages: int, n: int,
          exploration: bool = True) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="rr-plan-pages-"))
    shutil.copytree(world, tmp / "data")
    store = open_store(tmp / "data")
    try:
        engine = Engine(store, registry=ModelRegistry(tmp / "data" / "models"),
                        feed_plans=FeedPlans(ttl_s=3600.0) if plans else None).load()
        if not exploration:
            engine.pipeline = default_pipeline(
                engine.models, exploration=False,
                plans=FeedPlans(ttl_s=3600.0) if plans else None)
        for user in sessions[:20]:  # warm-up: caches, the exploration pool
            engine.feed(FeedRequest(user_id=f"warm-{user}", n=n))
        got: list[list[list[tuple[str, float, bool]]]] = []
        cpu: dict[str, list[float]] = {"afresh": [], "plan": []}
        for user in sessions:
            mine = []
            for _ in range(pages):
                hits = engine.pipeline.plans.hits if plans else 0
                t0 = time.process_time()
                result = engine.feed(FeedRequest(user_id=user, n=n))
                took = (time.process_time() - t0) * 1000
                hit = plans and engine.pipeline.plans.hits > hits
                cpu["plan" if hit else "afresh"].append(took)
                mine.append([(i.item_id, i.score,
                              any(r.code in EXPLORATION_CODES for r in i.reasons))
                             for i in result.items])
            got.append(mine)
        held = engine.pipeline.plans
        kept = list(held._plans.values())[:50] if plans else []
        parts = {}
        if kept:
            for name in ("scored", "proposals", "rows", "notes", "served"):
                parts[name] = int(statistics.fmean(deep_size(getattr(p, name)) for p in kept))
            parts["all"] = int(statistics.fmean(deep_size(p) for p in kept))
            parts["candidates"] = int(statistics.fmean(len(p.scored) for p in kept))
        return {"pages": got, "cpu": cpu, "plans": engine.plan_usage(),
                "plan_bytes_mean": parts or None}
    finally:
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--world", type=Path, required=True)
    ap.add_argument("--viewers", type=int, default=150)
    ap.add_argument("--pages", type=int, default=5)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-exploration", action="store_true",
                    help="serve without the exploration source, whose Thompson draws differ "
                         "between two engines asked a different number of times")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    db = next(args.world.glob("*.db"))
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        viewers = sorted(r[0] for r in con.execute("SELECT DISTINCT user_id FROM events"))
    finally:
        con.close()
    sessions = random.Random(args.seed).sample(viewers, args.viewers)
    on = serve(args.world, True, sessions, args.pages, args.n, not args.no_exploration)
    off = serve(args.world, False, sessions, args.pages, args.n, not args.no_exploration)
    same_pos = same_page = total = 0
    score_on, score_off = [], []
    explore_on: list[float] = []
    explore_off: list[float] = []
    other_on: list[float] = []
    other_off: list[float] = []
    first_same = 0
    for a_pages, b_pages in zip(on["pages"], off["pages"]):
        first_same += a_pages[0] == b_pages[0]
        for a, b in zip(a_pages[1:], b_pages[1:]):
            total += len(b)
            same_pos += sum(x[0] == y[0] for x, y in zip(a, b))
            same_page += len({x[0] for x in a} & {y[0] for y in b})
            score_on += [s for _, s, _ in a]
            score_off += [s for _, s, _ in b]
            explore_on += [s for _, s, e in a if e]
            explore_off += [s for _, s, e in b if e]
            other_on += [s for _, s, e in a if not e]
            other_off += [s for _, s, e in b if not e]

    def mean(values: list[float]) -> float | None:
        return round(statistics.fmean(values), 4) if values else None

    def ms(values: list[float]) -> dict:
        return {"pages": len(values),
                "mean_ms": round(statistics.fmean(values), 2) if values else None,
                "p50_ms": round(statistics.median(values), 2) if values else None}

    report = {
        "command": " ".join(["python", "benchmarks/plan_pages.py", *sys.argv[1:]]),
        "viewers": args.viewers, "pages_per_viewer": args.pages, "n": args.n,
        "cpu_plans_on": {k: ms(v) for k, v in on["cpu"].items()},
        "cpu_plans_off": ms(off["cpu"]["afresh"]),
        "first_pages_identical": f"{first_same} of {len(sessions)}",
        "next_pages": {"items": total,
                       "same_position_share": round(same_pos / max(1, total), 4),
                       "same_page_share": round(same_page / max(1, total), 4),
                       "mean_score_plans_on": round(statistics.fmean(score_on), 4),
                       "mean_score_plans_off": round(statistics.fmean(score_off), 4),
                       # Items that came with an exploration reason, and the others.
                       "exploration_items": [len(explore_on), len(explore_off)],
                       "mean_score_exploration": [mean(explore_on), mean(explore_off)],
                       "mean_score_others": [mean(other_on), mean(other_off)]},
        "plans": on["plans"],
        "plan_bytes_mean": on["plan_bytes_mean"],
    }
    print(json.dumps(report, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
