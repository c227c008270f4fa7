"""Same pages? Serve a fixed sequence of feeds and swipes and write every page as JSON.

Run it from two checkouts (before and after a change to the feed path) on the same world and
compare the files: a speed-up must leave them equal. The sequence is fixed by ``--seed``: feeds
of known and never-seen viewers with and without a region, a swipe after half of them (play,
skip, like, not interested, follow on the page's first video), and now and then an
explanation. The engine runs the offline pipeline (exploration recomputed on every request), so
the pages depend on the code and the world only. Request ids, which are random, are left out.

    cd CHECKOUT && python benchmarks/feed_pages.py --world W --out /tmp/pages-CHECKOUT.json
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path.cwd()))  # the checkout it is run from

from reelrank.engine import Engine  # noqa: E402
from reelrank.registry import ModelRegistry  # noqa: E402
from reelrank.store import open_store  # noqa: E402
from reelrank.types import Event, FeedRequest  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--world", type=Path, required=True, help="a data directory with a model")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--feeds", type=int, default=300)
    ap.add_argument("--viewers", type=int, default=150)
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rr-pages-"))
    shutil.copytree(args.world, tmp / "data")
    store = open_store(tmp / "data")
    try:
        engine = Engine(store, registry=ModelRegistry(tmp / "data" / "models")).load()
        engine.for_offline()
        viewers = sorted(engine.live.user_ids())[:args.viewers] + ["new-a", "new-b"]
        rng = random.Random(args.seed)
        ts = engine.live.clock + 1000
        out: list = []
        for step in range(args.feeds):
            user = rng.choice(viewers)
            result = engine.feed(FeedRequest(user_id=user, n=10,
                                             region=rng.choice([None, "us", "br"])))
            page = [(i.item_id, i.score, i.source, [(r.code, r.text) for r in i.reasons])
                    for i in result.items]
            out.append({"user": user, "model": result.model_version, "items": page,
                        "notices": [(r.code, r.text) for r in result.notices]})
            if page and rng.random() < 0.5:
                ts += 1000
                kind = rng.choice(["play", "skip", "like", "not_interested", "follow"])
                engine.ingest_events([Event(
                    event_id=f"e{step}", user_id=user, item_id=page[0][0], type=kind, ts=ts,
                    watch_ms=15_000 if kind in ("play", "skip") else None)])
            if page and step % 50 == 25:
                explained = engine.explain(user, page[-1][0])
                explained.pop("request_id", None)
                out.append({"explain": explained})
        args.out.write_text(json.dumps(out))
        print(f"{args.out}: {args.feeds} pages, {sum(len(p.get('items', ())) for p in out)} items")
    finally:
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
