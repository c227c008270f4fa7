"""Fairness benchmark: what the diversity and exploration settings do to engagement, topic
diversity and creator exposure, on the synthetic world and on a KuaiRand replay.

Settings (``reelrank.eval.audit.SETTINGS``): ``off`` (score order, no exploration), ``v0`` (the engine
before this work: never one creator twice in a row, the fresh-uploads source), ``default`` and
``strong``. Each world is run once per setting, in the same process, on the same data:

1. synthetic: the same seeded world, history and viewers for every setting; one session a day
   per viewer, every swipe ingested before the next page. Repeated for several world seeds; the
   table shows the median over seeds (all runs are in the JSON);
2. KuaiRand-Pure: the test days from the cut-off replayed in time order with live updates, a
   feed per sampled viewer and active day under each setting, plus the re-ranked logged slates.

Results: benchmarks/results/fairness.md, fairness.json and fairness.png.

    python benchmarks/bench_fairness.py --kuairand ../shared/datasets/kuairand-pure   # committed
    python benchmarks/bench_fairness.py --seeds 1 --users 60 --items 1000             # a quick look
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from reelrank.eval.audit import (  # noqa: E402
    SIM_COLUMNS, _plain, audit_simulation, entropy_over_time, markdown_table, settings_named,
)

RESULTS = ROOT / "benchmarks" / "results"
NUMERIC = [key for _, key, fmt in SIM_COLUMNS if fmt != "{}"]


def median_rows(runs: list[list[dict]]) -> list[dict]:
    """Per setting, the median of each figure over the seeds."""
    out = []
    for per_seed in zip(*runs):
        row = {"setting": per_seed[0]["setting"]}
        for key in NUMERIC:
            values = [r[key] for r in per_seed if r.get(key) is not None]
            row[key] = statistics.median(values) if values else None
        row["over_time"] = per_seed[0]["over_time"]
        out.append(row)
    return out


def ranges(runs: list[list[dict]], keys: list[str]) -> str:
    lines = ["| setting | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for per_seed in zip(*runs):
        cells = []
        for key in keys:
            values = [r[key] for r in per_seed]
            cells.append(f"{min(values):.3f} – {max(values):.3f}")
        lines.append(f"| {per_seed[0]['setting']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def change(rows: list[dict], key: str, name: str, base: str = "off",
           relative: bool = True) -> str:
    ref = next(r for r in rows if r["setting"] == base)[key]
    now = next(r for r in rows if r["setting"] == name)[key]
    if ref is None or now is None:
        return f"{ref} -> {now}"
    if not relative or ref == 0:  # a ratio of a score on an additive scale would mislead
        return f"{ref:.3f} -> {now:.3f}"
    return f"{ref:.3f} -> {now:.3f} ({(now - ref) / ref:+.0%})"


def reading(sim: list[dict], kr: list[dict] | None, names: list[str]) -> str:
    """The changes against ``off``, computed from the tables above."""
    lines = []
    compared = [n for n in ("default", "strong") if n in names and "off" in names]
    for name in compared:
        lines.append(
            f"- synthetic, `{name}` against `off` (medians): watch ratio "
            f"{change(sim, 'mean_watch_ratio', name)}, like rate {change(sim, 'like_rate', name)}, "
            f"hidden fit {change(sim, 'mean_hidden_fit', name, relative=False)}; topic entropy "
            f"per viewer-day {change(sim, 'per_user_topic_entropy_bits', name)}, creator Gini "
            f"{change(sim, 'creator_exposure_gini', name)}, new-creator share "
            f"{change(sim, 'new_creator_exposure_share', name, relative=False)}.")
    for name in compared if kr else ():
        base = kr[0]["setting"]
        row = next(r for r in kr if r["setting"] == name)
        lv, wr = row["slate_vs_first"]["ndcg10_long_view"], row["slate_vs_first"]["ndcg10_watch_ratio"]
        lines.append(
            f"- KuaiRand, `{name}` against `{base}`: slate NDCG@10 of long views "
            f"{lv[0]:+.4f} (s.e. {lv[1]:.4f}, paired over {row['slates']} viewers), of watch "
            f"ratio {wr[0]:+.4f} (s.e. {wr[1]:.4f}); topic entropy per viewer-day "
            f"{change(kr, 'per_user_topic_entropy_bits', name, base)}, creator Gini "
            f"{change(kr, 'creator_exposure_gini', name, base)}, coverage "
            f"{change(kr, 'catalog_coverage', name, base)}, new-creator share "
            f"{change(kr, 'new_creator_exposure_share', name, base, relative=False)}.")
    for rows, world in ((sim, "synthetic"), (kr or [], "KuaiRand")):
        first = rows[0] if rows else None
        for r in rows[1:]:
            keys = [k for k in r if isinstance(r[k], (int, float)) and k in first]
            if keys and all(r[k] == first[k] for k in keys):
                lines.append(f"- {world}: `{r['setting']}` served exactly what "
                             f"`{first['setting']}` served (every figure equal).")
    return "\n".join(lines)


def plot(sim: list[dict], kr: list[dict] | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("synthetic world (median over seeds)", sim, "mean_watch_ratio",
               "mean watch ratio")]
    if kr:
        panels.append(("KuaiRand replay", kr, "slate_ndcg10_watch_ratio",
                       "slate NDCG@10 of watch ratio"))
    fig, axes = plt.subplots(len(panels), 2, figsize=(11, 4.2 * len(panels)), squeeze=False)
    for row, (title, rows, engagement, label) in zip(axes, panels):
        for r in rows:
            row[0].scatter(r["per_user_topic_entropy_bits"], r[engagement], s=60)
            row[0].annotate(r["setting"], (r["per_user_topic_entropy_bits"], r[engagement]),
                            textcoords="offset points", xytext=(6, 4))
            row[1].scatter(r["creator_exposure_gini"], r[engagement], s=60)
            row[1].annotate(r["setting"], (r["creator_exposure_gini"], r[engagement]),
                            textcoords="offset points", xytext=(6, 4))
        row[0].set_xlabel("per-viewer topic entropy of served feeds (bits)")
        row[1].set_xlabel("creator exposure Gini (lower: fairer)")
        for ax in row:
            ax.set_ylabel(label)
            ax.set_title(title)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--settings", default="off,v0,default,strong")
    ap.add_argument("--seeds", type=int, default=3, help="synthetic worlds (seeds 7, 8, ...)")
    ap.add_argument("--users", type=int, default=300)
    ap.add_argument("--items", type=int, default=4000)
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--swipes", type=int, default=40)
    ap.add_argument("--kuairand", default=None, help="KuaiRand-Pure folder (skipped if absent)")
    ap.add_argument("--cutoff", default="2022-05-01")
    ap.add_argument("--test-days", type=int, default=4)
    ap.add_argument("--max-users", type=int, default=3000)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    settings = settings_named(args.settings)
    started = time.perf_counter()

    sim_runs = []
    for seed in range(7, 7 + args.seeds):
        sim_runs.append([audit_simulation(s, users=args.users, items=args.items, days=args.days,
                                          swipes=args.swipes, seed=seed) for s in settings])
        print(f"synthetic seed {seed} done after {time.perf_counter() - started:.0f} s", flush=True)
    sim = median_rows(sim_runs)

    kr = None
    if args.kuairand:
        from reelrank.eval.fairness_replay import KUAIRAND_COLUMNS, audit_replay

        kr = audit_replay(args.kuairand, settings, cutoff=args.cutoff, test_days=args.test_days,
                          max_users=args.max_users, seed=0)
        print(f"kuairand done after {time.perf_counter() - started:.0f} s", flush=True)

    command = "python benchmarks/bench_fairness.py " + " ".join(sys.argv[1:])
    world = sim_runs[0][0]["world"]
    parts = [
        "# Fairness and diversity settings: engagement, topic diversity, creator exposure",
        f"Command: `{command}`",
        f"Machine: {platform.machine()}, Python {platform.python_version()}, torch "
        f"{torch.__version__}, one thread; a 2-core machine shared with other jobs "
        f"(wall time {time.perf_counter() - started:.0f} s in all; timings are not the point here).",
        "Settings: " + "; ".join(f"`{s.name}`: {s.description}" for s in settings) + ".",
        "## Synthetic world",
        f"{args.seeds} seeded worlds (seeds 7 to {6 + args.seeds}) of {world['users']} viewers, "
        f"{world['items']} videos and {world['creators']} creators (seed 7), {world['history']} of "
        f"background history, then {args.days} simulated days with one session per viewer a day "
        f"(at most {args.swipes} swipes, viewers leave as they tire); every swipe is ingested "
        f"before the next page. Scorer: the heuristic v0 scorer (no neural model is trained on "
        f"these worlds). Exploration pools {world['pools']} impressions. Median over seeds:",
        markdown_table(sim, SIM_COLUMNS),
        "Range over seeds (min – max):",
        ranges(sim_runs, ["mean_watch_ratio", "like_rate", "per_user_topic_entropy_bits",
                          "creator_exposure_gini", "new_creator_exposure_share"]),
        "Per-viewer topic entropy of the served feeds by day (seed 7):",
        entropy_over_time(sim_runs[0]),
        "Columns: *mean watch ratio* per swipe (skips included, capped at 2); *long-view rate* "
        "per view; *like rate* per impression; *hidden fit* = the simulator's noise-free fit of "
        "what was served (its ground truth); *topic entropy/viewer-day* = entropy of the topics "
        "served to a viewer in a day, averaged; *watched-topic entropy* = entropy of the topics "
        "each viewer long-viewed over the run; *creator Gini* of served slots over every creator "
        "(zeros included); *coverage* = share of the catalog served at least once; *popularity "
        "bias* = mean popularity percentile (by views before the run) of served slots; "
        "*new-creator share* = share of served slots from creators whose first upload is in the "
        "last 3 days before the run (the world's new creators); *exploration share* = share of "
        "served slots still in exploration (new_video / new_creator reasons).",
    ]
    if kr:
        r = kr[0]["replay"]
        parts += [
            "## KuaiRand-Pure replay",
            f"Cut-off {r['cutoff']}, {r['test_days']} test days, {r['users']} sampled test "
            f"viewers (seed {r['seed']}); {r['test_events_replayed']} test events of all viewers "
            f"replayed in time order with live updates. Exploration pools {r['pools']} "
            f"impressions; a creator is new while their videos have had fewer than "
            f"{r['new_creator_impressions']} impressions ({kr[0]['new_creators']} creators at the "
            f"cut-off). Replay wall time {r['seconds']:.0f} s.",
            markdown_table(kr, KUAIRAND_COLUMNS),
            "Columns: *GAUC long view* of `engine.rank` scores of every sampled test impression "
            "at its instant (the replay's figure; re-ranking changes no score, so it is one "
            "number for all settings); *slate NDCG@10* = each viewer's logged test slate (every "
            f"video shown to them in the test days, at least {r['slate_min']}, "
            f"{kr[0]['slates']} viewers) scored at their first test impression and re-ranked by "
            "the setting, with the logged long views / watch ratios as gains; *served hit rate* = "
            "share of served feed items the viewer long-viewed later in the log (the log only "
            "knows what the platform's own feed showed, so this favours feeds like it); the "
            "exposure columns are over the served feeds, one 10-item feed per sampled viewer "
            "and active local day.",
            "Per-viewer topic entropy of the served feeds by test day:",
            entropy_over_time(kr),
        ]
    parts += ["## Reading", reading(sim, kr, [s.name for s in settings]),
              "![engagement against topic diversity and creator Gini](fairness.png)"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fairness.md").write_text("\n\n".join(parts) + "\n")
    (args.out / "fairness.json").write_text(json.dumps(_plain(
        {"command": command, "synthetic_runs": sim_runs, "synthetic_median": sim,
         "kuairand": kr}), indent=1) + "\n")
    plot(sim, kr, args.out / "fairness.png")
    print((args.out / "fairness.md").read_text())


if __name__ == "__main__":
    main()
