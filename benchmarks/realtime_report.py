"""Markdown and plots for bench_realtime.py's replay and cold-start results."""

from __future__ import annotations

import json
from pathlib import Path

ARM_TEXT = {
    "static": "static (nothing of the test days goes in)",
    "frozen": "frozen weights, live state on (online updates off)",
    "online": "online updates on (live state on, weights learned as the stream flows)",
}


def _ok(x) -> bool:
    return x is not None and x == x  # None, or NaN where no viewer had both outcomes


def _fmt(x) -> str:
    return f"{x:.4f}" if _ok(x) else "—"


def replay_markdown(r: dict, png: str) -> str:
    arms = r["arms"]
    names = list(arms)
    days = list(next(iter(arms.values()))["by_day"])
    buckets = list(next(iter(arms.values()))["by_position"])
    sample = (f"a seeded sample of {r['scored_users']:,} of the {r['test_users']:,} test users is "
              "scored (every user's events are still replayed, learned from and counted)"
              if r.get("score_users") else f"all {r['test_users']:,} test users are scored")
    chosen = (", chosen on the newest tenth of the training span, then refit on every row"
              if r["config"]["train"].get("holdout") else "")
    lines = [
        "# Real time on KuaiRand: the replay with the trained models, online updates on and off",
        "", f"Command: `{r['command']}`", "", f"Machine: {r['machine']}.", "",
        f"Split: train {r['split']['train_days']}, test {r['split']['test_days']} "
        f"({r['split']['tz']}); {sample}. Base model: `train_from_store` on the training period "
        f"(ranker, {r['train'].get('ranker_epochs') or r['config']['train']['ranker']['epochs']} "
        f"epoch(s){chosen}; retrieval is not trained: "
        f"only the ranker scores impressions), {r['train']['seconds']} s.", "",
        "Each test impression is scored with `engine.rank` before anything of its instant is "
        + ("revealed, the request carrying the impression's logged context (device, region, "
           "traffic source) as a client sends it" if r["config"].get("context") else
           "revealed (no context in the request)")
        + "; then the instant's events go in (`frozen`, `online`). `online`: an "
        "`OnlineLearner` learns from each impression once its view has settled "
        f"({r['config']['settle_ms']} ms), one step per batch of {r['config']['online']['batch_size']} "
        f"rows or per {r['config']['online']['max_wait_ms'] // 1000} s of event time, Adam lr "
        f"{r['config']['online']['ranker_lr']} (a partial batch moves only embedding rows), "
        "and its ranker is swapped into serving at most every "
        f"{r['config']['install_every_ms'] // 60000} minutes of event time. GAUC of long view "
        "(per user, impression-weighted; users with one class only are left out):", "",
        "| arm | all | " + " | ".join(f"pos {b}" for b in buckets) + " | " +
        " | ".join(days) + " | seconds |",
        "|---|" + "---|" * (len(buckets) + len(days) + 2),
    ]
    for a in names:
        e = arms[a]
        lines.append(f"| {a} | {_fmt(e['overall']['gauc'])} | " +
                     " | ".join(_fmt(e["by_position"][b]["gauc"]) for b in buckets) + " | " +
                     " | ".join(_fmt(e["by_day"][d]["gauc"]) for d in days) +
                     f" | {e['seconds']} |")
    first = arms[names[0]]
    lines.append("| (impressions) | " + f"{first['overall']['impressions']} | " +
                 " | ".join(str(first["by_position"][b]["impressions"]) for b in buckets) +
                 " | " + " | ".join(str(first["by_day"][d]["impressions"]) for d in days) + " | |")
    lines += ["", "The same with the long-view head's probability alone as the score (the feed "
                  "orders by the value formula over every head; this shows which part moved):",
              "", "| arm | all | " + " | ".join(f"pos {b}" for b in buckets) + " | " +
              " | ".join(days) + " |", "|---|" + "---|" * (len(buckets) + len(days) + 1)]
    for a in names:
        h = arms[a]["long_view_head"]
        lines.append(f"| {a} | {_fmt(h['overall']['gauc'])} | " +
                     " | ".join(_fmt(h["by_position"][b]["gauc"]) for b in buckets) + " | " +
                     " | ".join(_fmt(h["by_day"][d]["gauc"]) for d in days) + " |")
    if all("like_head" in arms[a] for a in names):
        lines += ["", "The like head's probability as the score, GAUC of likes:", "",
                  "| arm | all | " + " | ".join(days) + " |", "|---|" + "---|" * (len(days) + 1)]
        for a in names:
            h = arms[a]["like_head"]
            lines.append(f"| {a} | {_fmt(h['overall']['gauc'])} | " +
                         " | ".join(_fmt(h["by_day"][d]["gauc"]) for d in days) + " |")
    if "online_vs_frozen" in r:
        lines += _paired_table(r["online_vs_frozen"], days, buckets)
    if "online" in arms and "frozen" in arms:
        on, off = arms["online"], arms["frozen"]
        # Results from before the paired table: the plain differences.
        plain = () if "online_vs_frozen" in r else (
            ("value formula", on, off),
            ("long-view head", on["long_view_head"], off["long_view_head"]))
        for label, a, b in plain:
            diff = [f"all {a['overall']['gauc'] - b['overall']['gauc']:+.4f}"]
            diff += [f"{d} {a['by_day'][d]['gauc'] - b['by_day'][d]['gauc']:+.4f}" for d in days]
            diff += [f"pos {p} {a['by_position'][p]['gauc'] - b['by_position'][p]['gauc']:+.4f}"
                     for p in buckets if _ok(a["by_position"][p]["gauc"])
                     and _ok(b["by_position"][p]["gauc"])]
            lines += ["", f"Online minus frozen ({label}): " + ", ".join(diff) + "."]
        if "same_version" in on:
            lines += ["", "Diagnostic: GAUC pools each viewer's impressions over whole days, scored "
                          "by many versions of the online model, so a version that moves all its "
                          "scores alike changes GAUC without changing any ranking a feed makes. "
                          "Comparing only impressions scored while the same online version "
                          "served (in both arms alike):", "",
                      "| arm | value formula | long-view head | impressions used |",
                      "|---|---|---|---|"]
            for a in names:
                sv = arms[a].get("same_version")
                if sv:
                    lines.append(f"| {a} | {_fmt(sv['value']['gauc'])} | "
                                 f"{_fmt(sv['long_view_head']['gauc'])} | "
                                 f"{sv['value']['gauc_impressions']} |")
        o = on.get("online", {})
        lines += ["", f"Online learner: {o.get('steps')} steps, {o.get('rows_trained')} rows "
                      f"learned, {o.get('installs')} versions swapped in; join "
                      f"`{json.dumps(o.get('join'))}`."]
    lines += ["", "Arms: " + "; ".join(f"`{a}`: {ARM_TEXT.get(a, a)}" for a in names) + ".", "",
              f"![GAUC by session position and by day]({png})", "",
              f"Wall time: {r['wall_seconds']} s.", ""]
    return "\n".join(lines)


def _paired_table(paired: dict, days: list[str], buckets: list[str]) -> list[str]:
    """Online minus frozen with its bootstrap interval over users (``replay.paired_report``)."""
    cols = [("all", lambda e: e["overall"])]
    cols += [(d, lambda e, d=d: e["by_day"][d]) for d in days]
    cols += [(f"pos {b}", lambda e, b=b: e["by_position"][b]) for b in buckets]
    if "by_viewer" in paired["value"]:
        cols += [(f"viewers {v}", lambda e, v=v: e["by_viewer"][v])
                 for v in paired["value"]["by_viewer"]]

    def cell(x: dict) -> str:
        if not _ok(x["diff"]):
            return "—"
        return f"{x['diff']:+.4f} [{x['low']:+.4f}, {x['high']:+.4f}]"

    lines = ["", "Online minus frozen, GAUC on the same impressions, with a 95% bootstrap interval "
                 "over users (2,000 resamples; a user's impressions stay together):", "",
             "| score | " + " | ".join(c for c, _ in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for label, key in (("value formula", "value"), ("long-view head", "long_view_head")):
        lines.append(f"| {label} | " + " | ".join(cell(get(paired[key])) for _, get in cols)
                     + " |")
    if "by_viewer" in paired["value"]:
        lines += ["", "Viewers in training: those with training examples before the cut-off; "
                      "new: the rest (the base model learned from none of their impressions)."]
    share = paired["value"]["overall"]
    lines += ["", f"Users whose AUC is higher online (value formula, ties half): "
                  f"{share['share_a_better']:.3f} of {share['users']:,}."]
    return lines


def replay_plot(r: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    arms = r["arms"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, key, title in ((axes[0], "by_position", "GAUC by session position"),
                           (axes[1], "by_day", "GAUC by test day")):
        groups = list(next(iter(arms.values()))[key])
        x = np.arange(len(groups))
        width = 0.8 / len(arms)
        for k, (name, e) in enumerate(arms.items()):
            vals = [e[key][g]["gauc"] if _ok(e[key][g]["gauc"]) else 0.0 for g in groups]
            ax.bar(x + k * width, vals, width, label=name)
        ax.set_xticks(x + width * (len(arms) - 1) / 2, groups)
        ax.set_ylim(0.45, max(0.7, ax.get_ylim()[1]))
        ax.axhline(0.5, color="grey", lw=0.8)
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.suptitle("KuaiRand replay, trained models: GAUC of long view")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def coldstart_markdown(r: dict, png: str) -> str:
    c = r["config"]
    arms = r["arms"]
    lines = [
        "# Real time on the synthetic world: new viewers, swipe by swipe", "",
        f"Command: `{r['command']}`", "", f"Machine: {r['machine']}.", "",
        f"World: {r['world']['items']:,} videos, {r['world']['background_events']:,} background "
        f"events (seed {c['seed']}); base model {r['world']['model_version']} "
        f"(retrieval {c['train']['retrieval_epochs']} epochs, ranker "
        f"{c['train']['ranker_epochs']}), {r['world']['train_seconds']} s. "
        f"{c['new_viewers']} new viewers arrive over {c['arrival_span_ms'] // 60000} minutes of "
        f"event time, each swipes {c['swipes']} videos; the app asks for pages of "
        f"{c['page_size']}. Fatigue and leaving are off, so the curves move only with what the "
        "feed shows. The synthetic world drives the demo and these curves; it is not evidence "
        "about real viewers.", "",
        "| arm | watch ratio: swipe 1 | final | swipes to 80% | to 80% of gain | "
        "like rate: swipe 1 | final | swipes to 80% | hidden fit: swipe 1 | final | "
        "swipes to 80% of gain | same language: swipe 1 | final | seconds |",
        "|---|" + "---|" * 13,
    ]
    for name, e in arms.items():
        w, l, a, g = e["watch_ratio"], e["like"], e["affinity"], e["same_language"]
        lines.append(
            f"| {name} | {w['first']:.3f} | {w['final']:.3f} ± {w['final_se']:.3f} | "
            f"{w['swipes_to_80']} | {w['swipes_to_80_of_gain'] or '—'} | {l['first']:.3f} | "
            f"{l['final']:.3f} ± {l['final_se']:.3f} | {l['swipes_to_80']} | {a['first']:.3f} | "
            f"{a['final']:.3f} ± {a['final_se']:.3f} | {a['swipes_to_80_of_gain'] or '—'} | "
            f"{g['first']:.2f} | {g['final']:.2f} | {e['seconds']} |")
    follow = [m for m in ("top_topics", "engaged_topics") if all(m in e for e in arms.values())]
    if follow:
        labels = {"top_topics": "top-2 topics", "engaged_topics": "engaged topics"}
        lines += ["", "How the feed follows the viewer (swipe 1, 5 and 10 are trailing means):", "",
                  "| arm | " + " | ".join(f"{labels[m]}: swipe 1 | 5 | 10 | final | swipes to "
                                           "80% | to 80% of gain" for m in follow) + " |",
                  "|---|" + "---|" * (6 * len(follow))]
        for name, e in arms.items():
            cells = []
            for m in follow:
                t = e[m]
                at = [t["trailing"][min(k, len(t["trailing"]) - 1)] for k in (4, 9)]
                cells += [f"{t['first']:.3f}", f"{at[0]:.3f}",
                          f"{at[1]:.3f}", f"{t['final']:.3f} ± {t['final_se']:.3f}",
                          str(t["swipes_to_80"]), str(t["swipes_to_80_of_gain"] or "—")]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "", f"Final: the mean over swipes {c['swipes'] - c['final_swipes'] + 1}-{c['swipes']} "
        "(± its standard error across viewers). Swipes to 80%: the first swipe at which the "
        f"trailing mean over {c['smooth']} swipes reaches 80% of the final level; to 80% of "
        "gain: 80% of the way from the first swipe's level to the final one. Hidden fit is the "
        "simulator's noise-free affinity of the viewer for the video shown; top-2 topics, the "
        "share of videos in the viewer's two strongest topics (chance: about 0.08); engaged "
        "topics, the share of videos in a topic the viewer watched to the end or liked on an "
        "earlier swipe (0 until they have; behaviour, not quality). "
        "`topic_bandit` and `oracle` are references, not ReelRank: a Thompson-sampling policy "
        "over the videos' topics, and the unseen video of highest hidden fit "
        "(reelrank/eval/coldstart.py).", "",
    ]
    paired = r.get("online_vs_frozen")
    if paired:
        names = {"watch_ratio": "watch ratio", "like": "like rate", "positive": "positive rate",
                 "affinity": "hidden fit", "same_language": "same language",
                 "top_topics": "top-2 topics", "engaged_topics": "engaged topics"}
        lines += ["Online updates on minus off (`reelrank` minus `reelrank_frozen`), final level, "
                  "viewer by viewer (± standard error of the paired differences): " +
                  "; ".join(f"{names.get(m, m)} {d['diff']:+.4f} ± {d['se']:.4f}"
                            for m, d in paired.items()) + ".", ""]
    for name, e in arms.items():
        if "online" in e:
            lines.append(f"- {name}: online learner `{json.dumps(e['online'])}`")
        lines.append(f"- {name}: share of swipes by source `{json.dumps(e['sources'])}`")
    lines += ["", f"![cold-start curves]({png})", "", f"Wall time: {r['wall_seconds']} s.", ""]
    return "\n".join(lines)


def serve_markdown(r: dict) -> str:
    child, thread, off = r["trainer_child"], r["trainer_thread"], r["trainer_off"]
    modes = (("trainer as a child process (default)", child),
             ("trainer as a thread of the server", thread), ("no trainer (baseline)", off))

    def row(name, s):
        return f"| {name} | {s.get('p50', '—')} | {s.get('p90', '—')} | {s.get('p99', '—')} | " \
               f"{s.get('n', 0)} |"

    w = child["event_to_weights"]
    lines = [
        "# Real time: event-to-feed and event-to-weights", "",
        f"Command: `{r['command']}`", "",
        f"Machine: {r['machine']}.", "",
        f"World: {r['world']['items']:,} videos, {r['world']['background_events']:,} background "
        f"events; model {r['world']['model']} (one epoch each on the first 60,000 events). "
        "Server: `python -m reelrank.service.server`, auth on, one API process; the client is "
        "this script on the same machine. Three runs on the same data, one after the other: the "
        "online trainer as a child process the server supervises (`--trainer process`, the "
        "default: versions pass through the registry, which the server polls every 0.25 s; "
        "the child publishes at most every 2 s), as a "
        "thread of the server (`--trainer thread`: versions handed over in memory), and no "
        "trainer at all (`--trainer off`).", "",
        "## Event-to-feed (POST an event, then GET the next page)", "",
        "A viewer the service has never seen gets a cold page, then long-views and likes a video "
        "that was not on it; the next page is asked for right after the POST returns. "
        "Milliseconds, measured by the client:", "",
        "| measure | p50 | p90 | p99 | n |", "|---|---|---|---|---|",
        *[row(f"POST events + GET feed, {m}", e["event_to_feed_ms"]) for m, e in modes],
        *[row(f"POST events alone, {m}", e["post_ms"]) for m, e in modes],
        *[row(f"cold GET feed (a new viewer's first page), {m}", e["cold_feed_ms"])
          for m, e in modes],
        "",
        "Pages that reflected the event (the video gone and a personal source on the page, "
        "which a viewer with no history cannot have): " + "; ".join(
            f"{e['reflected']} of {e['trials']} ({m})" for m, e in modes) +
        "; failed requests: " + " / ".join(str(e["failed_requests"]) for _, e in modes) + ".",
        "",
        "## Event-to-weights (an accepted swipe until weights that learned from it serve)", "",
        f"{w['swipes']} swipes of {w['viewers']} simulated new viewers at {w['rate_per_s']} "
        f"swipes/s for {w['seconds']:g} s, each posted as it ends (stamped with the wall "
        "clock), a feed page of 5 asked for when a viewer's page is used up. Lag: from the POST "
        "returning to the first 50 ms poll of `GET /v1/admin/trainer` showing serving weights "
        "that learned through the swipe's time (`through_ts`: every example whose view ended by "
        "then is in them).", "",
        "| measure | p50 | p90 | p99 | n |", "|---|---|---|---|---|",
        row("event-to-weights lag (ms), trainer as a child process (default)", w["lag_ms"]),
        row("event-to-weights lag (ms), trainer as a thread of the server",
            thread["event_to_weights"]["lag_ms"]), "",
        "Swipes not learned within 30 s of the end: " + " / ".join(
            str(e["event_to_weights"]["not_learned_within_30s"]) for e in (child, thread)) +
        "; serving versions seen: " + " / ".join(
            str(e["event_to_weights"]["serving_versions_seen"]) for e in (child, thread)) +
        "; failed posts: " + " / ".join(
            str(e["event_to_weights"]["failed_posts"]) for e in (child, thread)) +
        " (child / thread). The trainer waits `settle_ms` = 1,000 ms after a view ends for its "
        "likes and shares; as a thread it hands a version over at most once a second, as a "
        "child process it publishes one at most every 2 s (`publish_every_s`).", "",
        "The thread trainer's own figures at the end (lag = serving time minus view end, over "
        f"every example it learned): `{json.dumps(thread['trainer_status']['lag_ms'])}`, steps "
        f"{thread['trainer_status']['steps']}, rows {thread['trainer_status']['rows_trained']}, "
        f"failures {thread['trainer_status']['failures']}. The child process at the end: "
        f"`{json.dumps(child['trainer_status'])}`.", "",
        f"Start-up: server {child['startup_s']} s (live state from the log); the child trainer "
        f"replayed the log, learned the rows after the model's training data and published "
        f"within {child.get('trainer_catch_up_s')} s of the server answering. As a thread: "
        f"catch-up {thread.get('trainer_catch_up_s')} s, then {thread.get('trainer_backlog_s')} "
        f"s learning the {thread.get('trainer_backlog_rows'):,} newest rows of the log (its "
        "queue keeps 20,000). Measurements start once the trainer is idle.", "",
    ]
    return "\n".join(lines)
