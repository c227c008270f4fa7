"""The evaluation report: report.json, report.md, the terminal tables and the plots of one
``reelrank eval`` run (``harness.run`` builds the report dict these write)."""

from __future__ import annotations

import json
import math
import platform
from importlib import metadata
from pathlib import Path

import logging

import numpy as np

from reelrank.metrics import hit_rate_at_k, mrr, ndcg_at_k_single
from reelrank.join import TASKS

logger = logging.getLogger(__name__)

RECALL_KS = (50, 100, 200)
TOP_N = 10
WATCH_RATIO_CAP = 2.0
REVERSED_TASKS = frozenset({"negative"})  # a good feed puts what will be hated last

def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in ("reelrank", "numpy", "torch", "matplotlib", "rich", "tqdm", "scipy",
                    "implicit", "recbole"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return out


def clean(value):
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python numbers, floats rounded."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return round(v, 6) if math.isfinite(v) else None
    return value


def common_users(runs: list, report: dict) -> None:
    """Where some model was ranked for a sample of the users only, every model's ranking
    metrics again over the users all models were ranked for, so the rows compare."""
    sets = [r.ranked_users for r in runs if r.ranked_users is not None]
    if not sets or all(len(x) == len(sets[0]) for x in sets):
        return
    common = sets[0]
    for x in sets[1:]:
        common = np.intersect1d(common, x)
    section = "retrieval" if "retrieval" in runs[0].metrics else "next_item"
    for r in runs:
        pick = np.isin(r.ranked_users, common)
        if "ranks" in r.per_user:
            ranks = r.per_user["ranks"][pick]
            entry = {"hr@10": hit_rate_at_k(ranks, 10),
                     "ndcg@10": ndcg_at_k_single(ranks, 10), "mrr": mrr(ranks)}
        else:
            entry = {k: float(np.mean(v[pick])) if pick.any() else math.nan
                     for k, v in r.per_user.items()}
        entry["users"] = int(pick.sum())
        report["models"][r.name]["metrics"][section]["common_users"] = entry


def write_report(report: dict, out: Path, lorenz: dict[str, tuple] | None = None) -> list[Path]:
    """report.json, report.md and the plots in ``out``; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "report.json", out / "report.md"]
    (out / "report.json").write_text(json.dumps(clean(report), indent=2) + "\n")
    (out / "report.md").write_text(markdown(report))
    written += _plots(report, out, lorenz or {})
    return written


# --- tables -------------------------------------------------------------------------------------

DASH = "—"


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return DASH
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}f}" if math.isfinite(value) else DASH
    return str(value)


def tables(report: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """The report as (title, header, rows) tables: what the console and report.md show."""
    models = {k: r for k, r in report["models"].items() if "error" not in r}
    out = []
    if report["split"]["protocol"] == "temporal":
        rows = []
        for name, r in models.items():
            m = r["metrics"]["impressions"]
            rows.append([name, _fmt(m["long_view"]["gauc"]), _fmt(m["long_view"]["auc"]),
                         _fmt(m["long_view"]["logloss"]), _fmt(m["watch"]["ndcg10_play_time"]),
                         _fmt(m["watch"]["ndcg10_watch_ratio"]), _fmt(r["fit_seconds"], 1),
                         _fmt(r["eval_seconds"], 1)])
        out.append(("Test impressions", ["model", "GAUC long view", "AUC long view",
                                         "LogLoss long view", "NDCG@10 play time",
                                         "NDCG@10 watch ratio", "fit s", "eval s"], rows))
        for metric, title in (("gauc", "GAUC by task"), ("auc", "AUC by task"),
                              ("logloss", "LogLoss by task")):
            rows = [[name] + [_fmt(r["metrics"]["impressions"][t][metric]) for t in TASKS]
                    for name, r in models.items()]
            if metric == "gauc" and models:
                first = next(iter(models.values()))["metrics"]["impressions"]
                rows.append(["(users, positives)"] + [
                    f"{first[t]['gauc_users']}, {first[t]['positives']}" for t in TASKS])
            header = [f"{t} (-score)" if t in REVERSED_TASKS and metric != "logloss" else t
                      for t in TASKS]
            out.append((title, ["model", *header], rows))
        rows = []
        for name, r in models.items():
            for key, how in (("impressions", "no context"),
                             ("impressions_context", "each impression's logged context")):
                m = r["metrics"].get(key)
                heads = {t: m[t]["head"] for t in TASKS if m and "head" in m[t]}
                if heads:
                    rows.append([name, how] + [_fmt(heads[t]["gauc"]) if t in heads else DASH
                                               for t in TASKS])
        if rows:
            out.append(("Heads' GAUC (each task's own probability, as POST /v1/rank answers)",
                        ["model", "rank request", *TASKS], rows))
        rows = [[name] + [_fmt(r["metrics"]["retrieval"][f"recall@{k}"]) for k in RECALL_KS]
                + [_fmt(r["metrics"]["retrieval"]["users"])] for name, r in models.items()]
        out.append(("Retrieval (whole catalog minus seen)",
                    ["model", *(f"Recall@{k}" for k in RECALL_KS), "users"], rows))
        out += _common_table(models, "retrieval", [f"recall@{k}" for k in RECALL_KS],
                             [f"Recall@{k}" for k in RECALL_KS])
    else:
        rows = [[name, _fmt(r["metrics"]["next_item"]["hr@10"]),
                 _fmt(r["metrics"]["next_item"]["ndcg@10"]), _fmt(r["metrics"]["next_item"]["mrr"]),
                 _fmt(r["metrics"]["next_item"]["users"]), _fmt(r["fit_seconds"], 1),
                 _fmt(r["eval_seconds"], 1)] for name, r in models.items()]
        out.append(("Next item (leave-one-out, full ranking)",
                    ["model", "HR@10", "NDCG@10", "MRR", "users", "fit s", "eval s"], rows))
        out += _common_table(models, "next_item", ["hr@10", "ndcg@10", "mrr"],
                             ["HR@10", "NDCG@10", "MRR"])
    keys = ("coverage@10", "creator_gini@10", "popularity_pct@10", "tag_diversity@10",
            "new_creator_share@10")
    rows = [[name] + [_fmt(r["metrics"]["beyond"][k]) for k in keys] for name, r in models.items()]
    out.append(("Beyond accuracy (top-10 lists)",
                ["model", "coverage", "creator Gini", "popularity pct", "tag diversity",
                 "new-creator share"], rows))
    replay = report.get("replay")
    if replay:
        from reelrank.eval.replay import BUCKETS

        rows = []
        for mode in ("live_on", "live_off"):
            r = replay[mode]
            rows.append([mode.replace("_", " "), _fmt(r["overall"]["gauc"])]
                        + [_fmt(r["by_position"][b]["gauc"]) for b in BUCKETS]
                        + [_fmt(r["seconds"], 1)])
        rows.append(["(impressions)", _fmt(replay["live_on"]["overall"]["impressions"])]
                    + [_fmt(replay["live_on"]["by_position"][b]["impressions"]) for b in BUCKETS]
                    + [""])
        out.append(("Engine replay: GAUC of long view by session position",
                    ["engine", "all", *(f"pos {b}" for b in BUCKETS), "seconds"], rows))
    return out


def _common_table(models: dict, section: str, keys: list[str], labels: list[str]) -> list:
    if not any("common_users" in r["metrics"][section] for r in models.values()):
        return []
    rows = [[name] + [_fmt(r["metrics"][section]["common_users"].get(k)) for k in keys]
            + [_fmt(r["metrics"][section]["common_users"]["users"])]
            for name, r in models.items()]
    return [("Same, on the users every model was ranked for", ["model", *labels, "users"], rows)]


def markdown(report: dict) -> str:
    ds, split = report["dataset"], report["split"]
    lines = [f"# Evaluation: {ds['kind']} ({split['protocol']})", ""]
    if report.get("command"):
        lines += ["```", report["command"], "```", ""]
    lines += [f"Dataset: `{ds['path']}`: {ds['items']} items, {ds['events']} events, "
              f"{ds['users']} users.", ""]
    lines += ["Split:", ""] + [f"- {k}: {_fmt(v)}" for k, v in split.items() if k != "protocol"]
    lines.append("")
    for title, header, rows in tables(report):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |",
                  "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    notes = [(name, n) for name, r in report["models"].items() for n in r["notes"]]
    notes += [(name, f"failed: {r['error']}") for name, r in report["models"].items()
              if "error" in r]
    if notes:
        lines += ["## Notes", ""] + [f"- {name}: {n}" for name, n in notes] + [""]
    lines += ["Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
              f"Wall time: {_fmt(report.get('wall_seconds'), 1)} s", ""]
    return "\n".join(lines)


def rich_tables(report: dict) -> list:
    from rich.table import Table

    out = []
    for title, header, rows in tables(report):
        table = Table(title=title)
        for k, h in enumerate(header):
            table.add_column(h, justify="left" if k == 0 else "right")
        for row in rows:
            table.add_row(*row)
        out.append(table)
    return out


def _plots(report: dict, out: Path, lorenz: dict[str, tuple]) -> list[Path]:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        logger.warning("matplotlib is not installed: no plots")
        return []
    written = []
    replay = report.get("replay")
    if replay:
        from reelrank.eval.replay import BUCKETS

        fig = Figure(figsize=(6, 4))
        ax = fig.add_subplot()
        width = 0.38
        for k, (mode, label) in enumerate((("live_on", "live updates ON"),
                                          ("live_off", "live updates OFF"))):
            vals = [replay[mode]["by_position"][b]["gauc"] for b in BUCKETS]
            vals = [v if v is not None and math.isfinite(v) else 0.0 for v in vals]
            ax.bar(np.arange(len(BUCKETS)) + (k - 0.5) * width, vals, width, label=label)
        counts = [replay["live_on"]["by_position"][b] for b in BUCKETS]
        ax.set_xticks(np.arange(len(BUCKETS)), [
            f"{b}\n{c['impressions']} impressions\n{c['gauc_users']} users"
            for b, c in zip(BUCKETS, counts)])
        ax.set_xlabel("position in session (user-day)")
        ax.set_ylabel("GAUC of long view")
        ax.set_ylim(0.4, None)
        ax.set_title("Engine replay of the test days")
        ax.legend()
        path = out / "replay_gauc_by_position.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        written.append(path)
    if lorenz:
        fig = Figure(figsize=(5.5, 5))
        ax = fig.add_subplot()
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="equal exposure")
        for name, (x, y) in lorenz.items():
            ax.plot(x, y, label=name)
        ax.set_xlabel("share of creators (least exposed first)")
        ax.set_ylabel("share of top-10 slots")
        ax.set_title("Creator exposure (Lorenz)")
        ax.legend()
        path = out / "creator_exposure_lorenz.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        written.append(path)
    return written
