"""``GET /v1/transparency``: the main parameters of the ranking, in plain words (EU Digital
Services Act, Art. 27), and the options a viewer has to change them (Art. 38).

Public (no token): the terms of a recommender system are for anyone to read. The text is built
from the objects that serve the feed (their sources, filters, scorer, value weights, wellbeing
policy), so it changes when they do.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from reelrank.service.deps import EngineDep, RuntimeDep

router = APIRouter(prefix="/v1", tags=["transparency"])

SIGNALS = [
    ("what you watch and for how long", "Watching a video to the end, or for a long time, counts "
     "most; a quick skip counts against similar videos."),
    ("what you like, share, comment on and follow", "Explicit signals that you want more of "
     "something."),
    ("what you mark not interested, and muted words", "Removed from your feed, never only "
     "down-weighted."),
    ("how other viewers react to a video", "Its rates of long views, likes, shares and "
     "negative feedback, recently and overall."),
    ("context you or the app send", "Coarse region (country or province), device type, time of "
     "day and where the request came from. No IP address or precise location is stored."),
]


def _first_sentence(obj: Any) -> str:
    doc = (type(obj).__doc__ or "").strip().split("\n\n")[0]
    return " ".join(doc.split())


@router.get("/transparency")
def transparency(engine: EngineDep, runtime: RuntimeDep) -> dict[str, Any]:
    pipeline = engine.pipeline
    models = engine.models.current
    weights = dict(models.bundle.value_weights) if models is not None else None
    wb = pipeline.wellbeing
    rr = pipeline.reranker
    return {
        "model_version": engine.model_version,
        "summary": (
            "Your personalized feed is ordered by two predictions from neural networks trained "
            "on viewers' behaviour: how likely you are to pick each video next given what you "
            "watched recently (together with how many viewers enjoyed it, how many enjoyed it "
            "in the last day, and how often viewers who enjoyed your latest videos enjoyed it "
            "too), and its value to "
            "you if shown: how likely you are to watch it for long, like, share, comment on it "
            "or follow its creator, minus how likely you are to react negatively. With "
            "personalization off, the feed uses no profile of you at all."),
        "signals": [{"signal": s, "how": h} for s, h in SIGNALS],
        "value_formula": {
            "weights": weights,
            "text": ("value = sum over outcomes of weight x predicted probability; "
                     "score = log(value) + retrieval x (the retrieval model's score of the video "
                     "for you + popularity x log(1 + its long views and likes) + "
                     "co_engagement x log(1 + how often viewers enjoyed it together with your "
                     "last 10 positives, the latest counting most) + trending x log(1 + its "
                     "positive engagement in the last day)); a page of 50 or more uses "
                     "the weights named with @50, chosen for long pages; without a ranker (an "
                     "app that sends no impressions) the retrieval part alone"
                     if weights else "no trained model is loaded: a transparent weighted sum of "
                     "the video's engagement rates and your affinity for its hashtags and creator "
                     "orders the feed"),
        },
        "candidate_sources": {
            mode: [{"name": s.name, "what": _first_sentence(s)} for s in sources]
            for mode, sources in pipeline.sources.items()
        },
        "filters": [{"name": f.name, "what": _first_sentence(f)} for f in pipeline.filters],
        "reranking": {"what": _first_sentence(rr),
                      "settings": {k: v for k, v in vars(rr).items()
                                   if isinstance(v, (int, float, str, bool))},
                      # What the rules cost on this server so far: the share of served slots
                      # given to a video the scorer alone would not have put on the page.
                      "price": {"served": pipeline.price.summary(), "text": (
                          "replaced_share of the slots served went to a video the scorer "
                          "alone would have left off the page: exploration_share to new "
                          "videos and creators, diversity_share to keep creators, sounds and "
                          "topics from repeating")}},
        "wellbeing": {
            "daily_limit": "Set a daily limit in your settings and the feed shows a break notice "
                           "once you pass it.",
            "young_viewers": (f"Young viewers get a daily limit of {wb.young_daily_limit_minutes} "
                              f"minutes unless they set one, and videos on sensitive topics "
                              f"({', '.join(sorted(wb.sensitive_tags))}) are down-weighted."),
        },
        "your_options": [
            {"option": "personalization off", "how": "PUT /v1/users/{id}/settings "
             "{\"personalization\": false}: a feed of what is popular in your region and "
             "language, and your follows in time order, not based on profiling."},
            {"option": "not interested", "how": "POST /v1/users/{id}/not_interested with a "
             "video, its creator or its sound."},
            {"option": "muted words and hashtags", "how": "muted_keywords in your settings."},
            {"option": "refresh my feed", "how": "POST /v1/users/{id}/reset forgets the "
             "interests inferred so far."},
            {"option": "see your data", "how": "GET /v1/users/{id}/data, including who read it."},
            {"option": "erase your data", "how": "DELETE /v1/users/{id}."},
            {"option": "why this video", "how": "GET /v1/explain?user_id=..&item_id=.."},
        ],
        "data": {
            "stored": "your events (what you watched, for how long, and your reactions), your "
                      "settings, and coarse region and device type",
            "not_stored": "IP addresses, precise location",
            "retention_days": runtime.retention_days,
        },
    }
