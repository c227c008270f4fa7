"""The viewer's own controls (``/v1/users/{user_id}/...``) and minting a viewer's token."""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response, status

from reelrank.errors import FieldProblem, ValidationError
from reelrank.privacy import export_user
from reelrank.service.deps import (
    ADMIN, OWN_USER, USER_SCOPE, Authenticator, EngineDep, Principal, RuntimeDep,
)
from reelrank.service.schemas import (
    ERROR_RESPONSES, Id, NotInterestedIn, SettingsIn, SettingsOut, TokenResponse,
)
from reelrank.types import Event

router = APIRouter(tags=["users"], responses=ERROR_RESPONSES)

UserId = Annotated[Id, Path()]


Caller = Annotated[Principal, Depends(OWN_USER)]


def _log(engine, user_id: str, caller: Principal, action: str) -> None:
    engine.store.log_access(user_id, caller.actor, action)


@router.get("/v1/users/{user_id}/settings", response_model=SettingsOut)
def get_settings(user_id: UserId, engine: EngineDep, caller: Caller) -> SettingsOut:
    # The viewer reading their own settings is not worth a record; anyone else's access is.
    if caller.scope != USER_SCOPE:
        _log(engine, user_id, caller, "read settings")
    return SettingsOut.of(engine.settings(user_id))


@router.put("/v1/users/{user_id}/settings", response_model=SettingsOut)
def put_settings(user_id: UserId, body: SettingsIn, engine: EngineDep,
                 caller: Caller) -> SettingsOut:
    """Change the viewer's settings; fields left out keep their values. Takes effect on the
    next feed request."""
    updated = body.merge(engine.settings(user_id))
    engine.put_settings(updated)
    _log(engine, user_id, caller, "changed settings")
    return SettingsOut.of(updated)


@router.get("/v1/users/{user_id}/data")
def get_data(user_id: UserId, engine: EngineDep, caller: Caller) -> dict[str, Any]:
    """Everything stored about the viewer: events, settings, inferred interests, watch time,
    and the access log. The read itself is logged first, so the export lists it."""
    _log(engine, user_id, caller, "exported data")
    return export_user(engine, user_id)


@router.get("/v1/users/{user_id}/access_log")
def get_access_log(user_id: UserId, engine: EngineDep, caller: Caller) -> dict[str, Any]:
    """Who read or changed this viewer's data, newest first."""
    return {"user_id": user_id,
            "entries": [{"ts": r.ts, "actor": r.actor, "action": r.action}
                        for r in engine.store.access_log(user_id)]}


@router.delete("/v1/users/{user_id}", status_code=status.HTTP_204_NO_CONTENT,
               response_class=Response)
def erase(user_id: UserId, runtime: RuntimeDep, caller: Caller) -> Response:
    """Erase the viewer: events, settings, tokens, live state, pending training examples.
    The next feed for this id is a cold start."""
    runtime.erase_user(user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/v1/users/{user_id}/reset")
def reset(user_id: UserId, engine: EngineDep, caller: Caller) -> dict[str, Any]:
    """Refresh my feed: forget the interests inferred so far; keep the account, settings and
    follows."""
    engine.reset_interests(user_id)
    _log(engine, user_id, caller, "reset interests")
    return {"user_id": user_id, "reset": True}


@router.post("/v1/users/{user_id}/not_interested", response_model=SettingsOut)
def not_interested(user_id: UserId, body: NotInterestedIn, engine: EngineDep,
                   caller: Caller) -> SettingsOut:
    """Less of this: the video (recorded as a ``not_interested`` event), or every video of
    its creator or with its sound (also kept in the settings, where it can be undone)."""
    item = engine.catalog.get(body.item_id)
    if item is None:
        raise ValidationError("unknown item", [FieldProblem("item_id",
                                                            f"unknown item_id {body.item_id!r}")])
    if body.scope == "sound" and item.sound_id is None:
        raise ValidationError("this video has no sound id",
                              [FieldProblem("scope", "the video has no sound to hide")])
    ts = body.ts if body.ts is not None else int(time.time() * 1000)
    engine.ingest_events([Event(event_id=f"ni-{uuid.uuid4().hex}", user_id=user_id,
                                item_id=item.item_id, ts=ts, type="not_interested")])
    settings = engine.settings(user_id)
    if body.scope != "video":
        field = "hidden_creators" if body.scope == "creator" else "hidden_sounds"
        value = item.creator_id if body.scope == "creator" else item.sound_id
        current = getattr(settings, field)
        if value not in current:
            hidden = {field: (*current, value)}
            settings = dataclasses.replace(settings, **hidden)  # type: ignore[arg-type]
            engine.put_settings(settings)
    return SettingsOut.of(settings)


@router.post("/v1/admin/users/{user_id}/token", response_model=TokenResponse,
             dependencies=[Depends(ADMIN)], tags=["operations"])
def mint_user_token(user_id: UserId, request: Request) -> TokenResponse:
    """A new token bound to this viewer (how an app's backend gets one for a viewer's client).
    The token is shown once; only its hash is stored."""
    auth: Authenticator | None = request.app.state.auth
    if auth is None:
        raise HTTPException(status.HTTP_409_CONFLICT,
                            "auth is switched off (--insecure-no-auth): there are no tokens")
    return TokenResponse(user_id=user_id, token=auth.mint(USER_SCOPE, user_id))
