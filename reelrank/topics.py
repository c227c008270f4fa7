"""The topic a video declares, for diversity rules, fairness figures and creator insights.

The learned topics (``reelrank.learned_topics``: clusters of the item tower's vectors, named
from their videos' words, ids kept across retrains) replace it in serving where a model version
carries them (``reelrank.pipeline.topics.LearnedTopics``, which falls back to this module's
answer without one). This topic needs no model at all, and is what offline figures and the
ranker's ``user_topic_lift`` feature read:

1. an explicit ``attributes["topic"]``, when the app sends one (the synthetic world does);
2. otherwise the item's first hashtag that is not a generic reach tag (``#fyp``, ``#viral`` ...):
   apps and creators list the main subject first, and KuaiRand's first tag id is the video's
   primary category (44 distinct first tags over 7,583 videos);
3. otherwise no topic (``None``): such items are never held back by a topic rule and count as
   their own bucket in the figures.

Stable across model versions, readable in explanations ("#cooking"), and known at upload.
"""

from __future__ import annotations

from reelrank.types import Item

GENERIC_TAGS = frozenset({"fyp", "foryou", "foryoupage", "viral", "trending", "xyzbca", "explore"})
NO_TOPIC = "(none)"


def topic_of(item: Item | None) -> str | None:
    if item is None:
        return None
    explicit = item.attributes.get("topic") if item.attributes else None
    if explicit:
        return str(explicit)
    for tag in item.hashtags:
        tag = tag.lower().lstrip("#")
        if tag and tag not in GENERIC_TAGS:
            return tag
    return None


def topic_label(topic: str | None) -> str:
    """How a topic reads in a sentence: ``#cooking``, or the raw value for tag ids."""
    if topic is None:
        return "no topic"
    return topic if ":" in topic else f"#{topic}"


class AttributeTopics:
    """The topic reader every component uses unless given another: ``topic_of`` and
    ``topic_label`` above. ``reelrank.pipeline.topics.LearnedTopics`` reads learned topics
    through the same three methods."""

    def of(self, item: Item | None) -> str | None:
        return topic_of(item)

    def label(self, topic: str | None) -> str:
        return topic_label(topic)

    def name_of(self, item: Item | None) -> str:
        return self.label(self.of(item))


ATTRIBUTE_TOPICS = AttributeTopics()
