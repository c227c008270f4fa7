"""Authentication and the other per-request dependencies of the routes.

Tokens are random (``secrets.token_urlsafe(32)``) and only their SHA-256 hashes are stored
(``reelrank.types.ApiKey``), so a copy of the database does not hand out working credentials.

Scopes:

- ``ingest``: ``POST /v1/items``, ``POST /v1/events``;
- ``serve``: feed, rank and explain for any user (the app's backend);
- ``admin``: everything (the operator), including minting user tokens;
- ``user`` (bound to one ``user_id``): ``/v1/users/{that id}/...``, the feed and explain of
  that id, and ``POST /v1/events`` with events of that id only (what a viewer-facing web app
  or the app on the viewer's device calls).

No token or an unknown one is a 401 (``AuthError``); a known token outside its scope is a 403
(``ForbiddenError``). Each route declares who may call it with one ``Access`` dependency.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.routing import BaseRoute

from reelrank.engine import Engine
from reelrank.service.runtime import Runtime
from reelrank.errors import AuthError, FieldProblem, ForbiddenError
from reelrank.store.base import KeyStore
from reelrank.types import ApiKey

log = logging.getLogger(__name__)

SERVICE_SCOPES = ("ingest", "serve", "admin")
USER_SCOPE = "user"
KEYS_FILE = "keys.json"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a scope, and for a user token the user it is bound to."""

    scope: str
    user_id: str | None = None
    authenticated: bool = True  # False when the service runs with auth switched off
    key_id: str | None = None  # a short prefix of the key's hash, for the access log

    @property
    def actor(self) -> str:
        """How the access log names this caller."""
        if self.scope == USER_SCOPE:
            return "the viewer"
        if not self.authenticated:
            return "admin (auth off)"
        return f"{self.scope} key {self.key_id}" if self.key_id else self.scope


ANONYMOUS_ADMIN = Principal(scope="admin", authenticated=False)


class Authenticator:
    """Turns bearer tokens into principals, and mints new tokens."""

    def __init__(self, store: KeyStore):
        self.store = store

    def identify(self, token: str | None) -> Principal:
        if not token:
            raise AuthError("missing bearer token: send 'Authorization: Bearer <token>'")
        key = self.store.find_key(hash_token(token))
        if key is None:
            raise AuthError("unknown or revoked token")
        return Principal(scope=key.scope, user_id=key.user_id, key_id=key.key_hash[:8])

    def mint(self, scope: str, user_id: str | None = None) -> str:
        """A new token; only its hash is kept. A user token needs the user it is bound to."""
        if scope == USER_SCOPE and not user_id:
            raise ValueError("a user token is bound to a user_id")
        if scope not in (*SERVICE_SCOPES, USER_SCOPE):
            raise ValueError(f"unknown scope {scope!r}")
        token = secrets.token_urlsafe(32)
        self.store.put_key(ApiKey(key_hash=hash_token(token), scope=scope,
                                  user_id=user_id if scope == USER_SCOPE else None,
                                  created_at=int(time.time() * 1000)))
        return token


def ensure_service_keys(store: KeyStore, data_dir: Path) -> Path | None:
    """Make sure there is a token for each service scope; return the keys file, if any.

    On first start one token per scope is generated and written in plain text to
    ``<data_dir>/keys.json`` (mode 0600), the only place it exists. Later starts keep what is
    there: tokens in the file are (re-)registered if the store lacks them (a fresh database next
    to an old keys file), and a scope that already has a key in the store gets no new one. If
    the store has keys but the file was removed, ``None`` is returned and a warning logged:
    those tokens cannot be recovered from their hashes.
    """
    path = Path(data_dir) / KEYS_FILE
    tokens: dict[str, str] = {}
    if path.exists():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"cannot read the keys file {path}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise RuntimeError(f"the keys file {path} is not a JSON object")
        tokens = {k: v for k, v in loaded.items() if k in SERVICE_SCOPES and isinstance(v, str)}
    changed = False
    for scope in SERVICE_SCOPES:
        token = tokens.get(scope)
        if token:
            if store.find_key(hash_token(token)) is None:
                store.put_key(ApiKey(hash_token(token), scope, None, int(time.time() * 1000)))
        elif store.count_keys(scope) == 0:
            token = secrets.token_urlsafe(32)
            store.put_key(ApiKey(hash_token(token), scope, None, int(time.time() * 1000)))
            tokens[scope] = token
            changed = True
    if changed:
        _write_private(path, json.dumps(tokens, indent=2) + "\n")
        log.info("generated API keys for scopes %s in %s",
                 ", ".join(s for s in SERVICE_SCOPES if s in tokens), path)
    if not path.exists():
        log.warning("the store has API keys but %s is missing; their tokens cannot be shown", path)
        return None
    return path


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, atomically (never a half-written keys file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the file may have existed with looser bits
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


# -- FastAPI dependencies ---------------------------------------------------------------------
_bearer = HTTPBearer(auto_error=False, description="A service token (ingest, serve, admin) "
                     "or a user token minted by POST /v1/admin/users/{user_id}/token.")


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


class Access:
    """A route's access rule, used as a dependency: ``Depends(Access("serve", user_in="query"))``.

    ``scopes`` are the service scopes allowed besides ``admin`` (always allowed). ``user_in``
    says where the route names its user (the ``user_id`` path or query parameter); when given,
    a user token bound to that same user is allowed too. ``"body"``: the user ids are in the
    body, which is parsed after this rule runs, so a user token passes here and the route
    checks every id against it (``check_own_events``).
    """

    def __init__(self, *scopes: str, user_in: Literal["path", "query", "body"] | None = None):
        self.scopes = frozenset(scopes) | {"admin"}
        self.user_in = user_in

    def __call__(self, request: Request,
                 _credentials: Annotated[HTTPAuthorizationCredentials | None,
                                         Depends(_bearer)]) -> Principal:
        auth: Authenticator | None = request.app.state.auth
        if auth is None:
            return ANONYMOUS_ADMIN
        # The request guard (service/guard.py) identified the caller before the body was read.
        principal = getattr(request.state, "principal", None)
        if principal is None:
            principal = auth.identify(bearer_token(request))
        if principal.scope in self.scopes:
            return principal
        if principal.scope == USER_SCOPE and self.user_in is not None:
            if self.user_in == "body":
                if principal.user_id is None:
                    raise ForbiddenError("this user token is bound to no user")
                return principal
            if self.user_in == "path":
                named: list[str | None] = [request.path_params.get("user_id")]
            else:
                # Every copy of the parameter must be the token's user: which copy the route
                # reads is FastAPI's business, not something this check should rely on.
                named = [*request.query_params.getlist("user_id")]
            if principal.user_id is not None and named == [principal.user_id]:
                return principal
            raise ForbiddenError("a user token reaches only its own user's data")
        allowed = " or ".join(sorted(self.scopes))
        raise ForbiddenError(f"this token's scope '{principal.scope}' cannot do this "
                             f"(needs {allowed})")


class ForbiddenFields(ForbiddenError):
    """A 403 whose details name the fields the caller may not write."""

    def __init__(self, message: str, problems: list[FieldProblem]):
        super().__init__(message)
        self.problems = problems


def check_own_events(principal: Principal, user_ids: list[str]) -> None:
    """A user token posts only its own viewer's events: every ``events[i].user_id`` must be
    the token's user, or the whole batch is refused (403) with each other id named."""
    if principal.scope != USER_SCOPE:
        return
    problems = [FieldProblem(f"events[{i}].user_id", "a user token posts only events whose "
                             "user_id is its own user", i)
                for i, user_id in enumerate(user_ids) if user_id != principal.user_id]
    if problems:
        raise ForbiddenFields(f"a user token posts only its own events: {len(problems)} of "
                              f"{len(user_ids)} events name another user_id; nothing was "
                              "stored", problems)


def needs_token(route: BaseRoute, also: tuple = ()) -> bool:
    """Whether calling ``route`` takes a valid token: it has an ``Access`` rule among its
    dependencies (its router's included), or one of ``also`` (other dependencies that identify
    the caller)."""
    dependant = getattr(route, "dependant", None)
    stack = [dependant] if dependant is not None else []
    while stack:
        current = stack.pop()
        call = current.call
        if isinstance(call, Access) or any(call is other for other in also):
            return True
        stack.extend(current.dependencies)
    return False


async def get_engine(request: Request) -> Engine:  # async: no threadpool hop for a lookup
    return request.app.state.engine


EngineDep = Annotated[Engine, Depends(get_engine)]


async def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]

INGEST = Access("ingest")
INGEST_OR_OWN_EVENTS = Access("ingest", user_in="body")
SERVE = Access("serve")
SERVE_OR_OWN_USER = Access("serve", user_in="query")
OWN_USER = Access(user_in="path")
ADMIN = Access()
