"""The web app (``/app/``), the catalog read it draws cards from, and the demo sign-in.

The app under ``reelrank/service/web/`` is static HTML, CSS and JavaScript modules; there is no
build step. It calls the same HTTP API, with the same bearer tokens, as any other client.

Demo sign-in. A real app signs its viewers in itself and gets each a user token from its own
backend (``POST /v1/admin/users/{id}/token``). So that ``reelrank demo`` gives a person
something to click through, a server started in *demo mode* (``create_app(..., demo=True)``,
which only ``reelrank demo`` does) also answers ``POST /v1/demo/sign-in``: it mints a user token
for the chosen viewer and hands out service tokens for the pages that need them (serve, for
the creator studio; admin, for the operator console). The feed page sends the viewer's events
with the viewer's own token, so no ingest token is handed out.
Anyone who can reach a demo server can therefore act as its operator; that is the point of a
demo and the reason the mode is off unless asked for. Outside demo mode the demo routes answer
404 and the page asks for tokens minted the regular way.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict

from reelrank.errors import FieldProblem, NotFoundError, ValidationError
from reelrank.service.deps import (
    ANONYMOUS_ADMIN, SERVICE_SCOPES, USER_SCOPE, Authenticator, EngineDep, Principal,
    bearer_token,
)
from reelrank.service.schemas import ERROR_RESPONSES, Id
from reelrank.types import EVENT_TYPES, Item

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
MAX_ITEM_IDS = 100
DIRECTORY_VIEWERS = 24
DIRECTORY_CREATORS = 40
DIRECTORY_SCAN = 5_000  # viewers looked at for the directory (demo worlds are smaller)

router = APIRouter(tags=["web app"], responses=ERROR_RESPONSES)


def install(app: FastAPI, demo: bool) -> None:
    """Add the web app's routes and static files to ``app``."""
    app.state.demo = demo
    app.state.demo_tokens = {}
    app.include_router(router)
    # html=True serves index.html for the folder itself (``/app/``).
    app.mount("/app", _NoCacheStatic(directory=WEB_DIR, html=True), name="web")


class _NoCacheStatic(StaticFiles):
    """Static files that the browser revalidates each time (ETags make that cheap), so an
    upgraded server never runs with a stale copy of one module next to new ones."""

    def file_response(self, *args: Any, **kwargs: Any):
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        return response


def any_principal(request: Request) -> Principal:
    """Any valid token, a user token included: the catalog is what every viewer sees anyway."""
    auth: Authenticator | None = request.app.state.auth
    if auth is None:
        return ANONYMOUS_ADMIN
    return auth.identify(bearer_token(request))


def _demo_only(request: Request) -> None:
    if not request.app.state.demo:
        raise NotFoundError("demo sign-in is off: this server does not run in demo mode "
                            "(`reelrank demo` starts one); sign in with a user token")


@router.get("/", include_in_schema=False)
def root() -> RedirectResponse:
    return RedirectResponse("/app/")


@router.get("/v1/demo")
def demo_status(request: Request) -> dict:
    """Whether this server runs in demo mode (and so offers the demo sign-in), and whether it
    checks tokens at all. Open to everyone: the sign-in page asks before anyone has a token."""
    return {"demo": bool(request.app.state.demo), "auth": request.app.state.auth is not None}


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    user_id: Id


# The pages' service tokens. Not ingest: the feed page posts the viewer's events with the
# viewer's own token, which may write only that viewer's.
_DEMO_SCOPES = tuple(s for s in SERVICE_SCOPES if s != "ingest")


@router.post("/v1/demo/sign-in", dependencies=[Depends(_demo_only)])
def demo_sign_in(body: SignIn, request: Request) -> dict:
    """Demo mode only: a new user token for ``user_id`` plus the service tokens the app's
    other pages use. With auth switched off every token is null and none is needed."""
    auth: Authenticator | None = request.app.state.auth
    tokens: dict[str, str | None] = {"user": None, **{s: None for s in _DEMO_SCOPES}}
    if auth is not None:
        tokens["user"] = auth.mint(USER_SCOPE, body.user_id)
        cached: dict[str, str] = request.app.state.demo_tokens
        for scope in _DEMO_SCOPES:
            # One of each per server run, not one per sign-in: the key table stays small.
            if scope not in cached:
                cached[scope] = auth.mint(scope)
            tokens[scope] = cached[scope]
    log.info("demo sign-in as viewer %s", body.user_id)
    return {"user_id": body.user_id, "demo": True, "tokens": tokens}


@router.get("/v1/demo/directory", dependencies=[Depends(_demo_only)])
def demo_directory(engine: EngineDep) -> dict:
    """Demo mode only: viewers to sign in as (the most active ones, with what they engage with
    most) and creators to open in the studio (the most prolific ones)."""
    viewers = []
    for user_id in engine.live.user_ids()[:DIRECTORY_SCAN]:
        state = engine.live.user_snapshot(user_id)
        if state is not None:
            # counts also tallies derived labels (long views); only real events are counted.
            events = sum(n for kind, n in state.counts.items() if kind in EVENT_TYPES)
            viewers.append((events, user_id, state))
    viewers.sort(key=lambda v: (-v[0], v[1]))
    creators: Counter[str] = Counter()
    for item_id in engine.catalog.ids():
        item = engine.catalog.get(item_id)
        if item is not None and item.visible:
            creators[item.creator_id] += 1
    return {
        "viewers": [
            {"user_id": uid, "events": n,
             "top_hashtags": [t for t, _ in state.hashtag_affinity.most_common(3)]}
            for n, uid, state in viewers[:DIRECTORY_VIEWERS]
        ],
        "creators": [{"creator_id": c, "videos": n}
                     for c, n in sorted(creators.items(), key=lambda kv: (-kv[1], kv[0]))
                     [:DIRECTORY_CREATORS]],
    }


@router.get("/v1/items")
def get_items(engine: EngineDep, principal: Annotated[Principal, Depends(any_principal)],
              ids: Annotated[str, Query(description="comma-separated item ids, at most 100")],
              request: Request) -> dict:
    """The catalog records of the given items (what a client draws its cards from), each with
    the ``topic`` the feed reads for it (``{"key", "name"}``: learned where the serving model
    has topics). Ids not in the catalog are listed under ``missing``; so are hidden items,
    except for service tokens."""
    wanted = [i.strip() for i in ids.split(",") if i.strip()]
    problems = []
    if not wanted:
        problems.append(FieldProblem("ids", "give at least one item id"))
    if len(wanted) > MAX_ITEM_IDS:
        problems.append(FieldProblem("ids", f"at most {MAX_ITEM_IDS} ids per request"))
    problems += [FieldProblem("ids", f"item id {i[:40]!r}... is over 128 characters")
                 for i in wanted if len(i) > 128]
    if problems:
        raise ValidationError("invalid ids", problems)
    show_hidden = principal.scope != USER_SCOPE
    topics = getattr(request.app.state, "topics", None)
    items, missing = [], []
    for item_id in dict.fromkeys(wanted):
        item = engine.catalog.get(item_id)
        if item is None or not (item.visible or show_hidden):
            missing.append(item_id)
        else:
            out = item_json(item)
            if topics is not None:
                key = topics.of(item)
                out["topic"] = {"key": key, "name": topics.label(key)} if key else None
            items.append(out)
    return {"items": items, "missing": missing}


def item_json(item: Item) -> dict:
    return {
        "item_id": item.item_id, "creator_id": item.creator_id,
        "duration_ms": item.duration_ms, "created_at": item.created_at,
        "caption": item.caption, "hashtags": list(item.hashtags), "sound_id": item.sound_id,
        "language": item.language, "region": item.region, "visible": item.visible,
        "attributes": dict(item.attributes),
    }
