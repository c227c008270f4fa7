"""The viewer's own controls (``/v1/users/{user_id}/...``) and minting a viewer's token."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Request, status

from reelrank.service.deps import ADMIN, OWN_USER, USER_SCOPE, Authenticator, EngineDep
from reelrank.service.schemas import ERROR_RESPONSES, Id, SettingsIn, SettingsOut, TokenResponse

router = APIRouter(tags=["users"], responses=ERROR_RESPONSES)

UserId = Annotated[Id, Path()]


@router.get("/v1/users/{user_id}/settings", response_model=SettingsOut,
            dependencies=[Depends(OWN_USER)])
def get_settings(user_id: UserId, engine: EngineDep) -> SettingsOut:
    return SettingsOut.of(engine.settings(user_id))


@router.put("/v1/users/{user_id}/settings", response_model=SettingsOut,
            dependencies=[Depends(OWN_USER)])
def put_settings(user_id: UserId, body: SettingsIn, engine: EngineDep) -> SettingsOut:
    """Change the viewer's settings; fields left out keep their values. Takes effect on the
    next feed request."""
    updated = body.merge(engine.settings(user_id))
    engine.put_settings(updated)
    return SettingsOut.of(updated)


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
