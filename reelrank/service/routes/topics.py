"""Learned topics for operators (``reelrank.pipeline.topics``): list them, choose whether an
explicit ``topic`` attribute or the learned topic wins, mark learned topics sensitive."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from reelrank.service.deps import ADMIN
from reelrank.service.schemas import ERROR_RESPONSES

router = APIRouter(prefix="/v1/admin", tags=["operations"], responses=ERROR_RESPONSES,
                   dependencies=[Depends(ADMIN)])


class TopicSettingsIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    precedence: Literal["attribute", "learned", "declared"] | None = Field(
        None, description="which wins over a video's learned topic: `declared` (the default: "
                          "its topic attribute or first hashtag), `attribute` (its topic "
                          "attribute only) or `learned` (nothing)")
    sensitive: list[Annotated[int, Field(ge=0, le=2**31 - 1)]] | None = Field(
        None, max_length=10_000,
        description="learned topic ids whose videos the wellbeing rules treat as sensitive "
                    "(the whole list: it replaces the one before)")


@router.get("/topics")
async def get_topics(request: Request) -> dict:
    """The serving version's learned topics (id, name, top terms, videos, sensitive), what
    changed against the version before (kept, renamed, split, merged, appeared, faded), and
    the operator's settings."""
    return await run_in_threadpool(request.app.state.topics.view)


@router.put("/topics/settings")
def put_topic_settings(request: Request, body: Annotated[TopicSettingsIn, Body()]) -> dict:
    """Set which topic wins where a video has an explicit `topic` attribute, and which learned
    topics are sensitive; kept beside the models, so a restart keeps them."""
    topics = request.app.state.topics
    return topics.set_settings(body.precedence, body.sensitive).view()
