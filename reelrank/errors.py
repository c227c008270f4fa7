"""The exception tree of ReelRank.

    ReelRankError                 base of everything raised on purpose
    +-- ValidationError           input that breaks the contract (HTTP 422); names the field
    +-- NotFoundError             an id that does not exist (HTTP 404)
    +-- AuthError                 missing or unknown credentials (HTTP 401)
    |   +-- ForbiddenError        valid credentials, wrong scope or another user (HTTP 403)
    +-- StoreError                the durable store failed or is misconfigured
    +-- ModelError                a model artifact is missing or does not fit the data
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One invalid field: where it is (e.g. ``events[3].type``) and why."""

    field: str
    message: str
    index: int | None = None


class ReelRankError(Exception):
    code = "error"


class ValidationError(ReelRankError):
    code = "invalid_input"

    def __init__(self, message: str, problems: list[FieldProblem] | None = None):
        super().__init__(message)
        self.problems = problems or []


class NotFoundError(ReelRankError):
    code = "not_found"


class AuthError(ReelRankError):
    code = "unauthorized"


class ForbiddenError(AuthError):
    code = "forbidden"


class StoreError(ReelRankError):
    code = "store_error"


class ModelError(ReelRankError):
    code = "model_error"


__all__ = [
    "FieldProblem", "ReelRankError", "ValidationError", "NotFoundError", "AuthError",
    "ForbiddenError", "StoreError", "ModelError",
]
