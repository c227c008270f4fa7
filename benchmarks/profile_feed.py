"""Where one feed's time goes: cProfile over feeds served in-process by the engine.

Loads an ``Engine`` on a copy of a world (the one ``bench_throughput.py`` builds), serves
``--feeds`` feeds of random known viewers (after ``--warmup`` unmeasured ones), and prints the
mean wall time per feed and the functions that take the most of it (own time and cumulative).
The HTTP layer is not in it: ``py-spy record`` on the server under ``bench_throughput.py``'s
load shows that part.

``--cpu-only`` leaves the profiler out and prints CPU, system time and page faults per feed;
``--mmap-threshold`` first sets the C heap as a server does (``tune_allocator``).

    python benchmarks/profile_feed.py --world /tmp/rr-throughput-world-20000-2000-7
    python benchmarks/profile_feed.py --world W --cpu-only --feeds 200 --mmap-threshold 2097152
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reelrank.engine import Engine  # noqa: E402
from reelrank.pipeline.context import FeedRequest  # noqa: E402
from reelrank.registry import ModelRegistry  # noqa: E402
from reelrank.store import open_store  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--world", type=Path, required=True)
    ap.add_argument("--feeds", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--sort", default="tottime")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mmap-threshold", type=int, default=0,
                    help="set the C heap as a server does first (tune_allocator, 2 arenas and "
                         "this threshold in bytes); 0 leaves glibc's defaults")
    ap.add_argument("--cpu-only", action="store_true",
                    help="no profiler: CPU, system time and page faults per feed, 3 rounds")
    args = ap.parse_args()
    if args.mmap_threshold:
        from reelrank.train.budget import tune_allocator

        print("allocator:", tune_allocator(mmap_threshold=args.mmap_threshold))
    tmp = Path(tempfile.mkdtemp(prefix="rr-profile-"))
    shutil.copytree(args.world, tmp / "data")
    store = open_store(tmp / "data")
    try:
        engine = Engine(store, registry=ModelRegistry(tmp / "data" / "models")).load()
        viewers = engine.live.user_ids()
        rng = random.Random(args.seed)
        for _ in range(args.warmup):
            engine.feed(FeedRequest(user_id=rng.choice(viewers)))
        if args.cpu_only:
            for _ in range(3):
                before, cpu = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
                for _ in range(args.feeds):
                    engine.feed(FeedRequest(user_id=rng.choice(viewers)))
                after, cpu = resource.getrusage(resource.RUSAGE_SELF), time.process_time() - cpu
                print(f"{cpu * 1000 / args.feeds:.2f} ms of CPU per feed, of which system "
                      f"{(after.ru_stime - before.ru_stime) * 1000 / args.feeds:.2f}; "
                      f"{(after.ru_minflt - before.ru_minflt) / args.feeds:.0f} page faults")
            return
        prof = cProfile.Profile()
        started = time.perf_counter()
        prof.enable()
        for _ in range(args.feeds):
            engine.feed(FeedRequest(user_id=rng.choice(viewers)))
        prof.disable()
        took = time.perf_counter() - started
        print(f"model {engine.models.version}; {args.feeds} feeds, "
              f"{took * 1000 / args.feeds:.2f} ms per feed under the profiler")
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats(args.sort).print_stats(args.top)
        print(out.getvalue())
    finally:
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
