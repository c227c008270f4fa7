"""The API's error shape as exceptions.

Every non-2xx answer of a ReelRank server carries
``{"error": {"code": ..., "message": ..., "details": [{"field", "message", "index"?}]}}``.
The client raises one exception per answer, of a class chosen by the status, carrying the code,
the message and the details, so a caller can tell *which* field of *which* batch element was
refused without parsing text (``err.fields == ["events[3].type"]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ErrorDetail:
    """One problem the server named: the field (``events[3].type``), why, and for a batch the
    element's index in the caller's own list (the client adds the batch's offset)."""

    field: str
    message: str
    index: int | None = None


class ApiError(Exception):
    """A ReelRank server answered with an error status."""

    def __init__(self, status: int, code: str, message: str,
                 details: list[ErrorDetail] | None = None, *, sent_before: int = 0):
        self.status = status
        self.code = code
        self.message = message
        self.details = list(details or [])
        # For batched sends: how many elements earlier batches already stored.
        self.sent_before = sent_before
        super().__init__(self._text())

    @property
    def fields(self) -> list[str]:
        """The fields the server named, in its order, without repeats."""
        return list(dict.fromkeys(d.field for d in self.details))

    @property
    def indexes(self) -> list[int]:
        """The batch elements the server refused, as indexes into the caller's list."""
        return sorted({d.index for d in self.details if d.index is not None})

    def _text(self) -> str:
        text = f"{self.status} {self.code}: {self.message}"
        if self.details:
            shown = "; ".join(f"{d.field}: {d.message}" for d in self.details[:5])
            more = len(self.details) - 5
            text += f" ({shown}{f'; and {more} more' if more > 0 else ''})"
        return text


class AuthenticationError(ApiError):
    """401: the token is missing or unknown."""


class PermissionDeniedError(ApiError):
    """403: the token's scope does not reach this path (or it is another viewer's)."""


class NotFoundError(ApiError):
    """404: no such item, creator, job, or route."""


class ConflictError(ApiError):
    """409: the server cannot do this in its configuration (e.g. tokens with auth off)."""


class PayloadTooLargeError(ApiError):
    """413: the request body is over the server's size cap."""


class InvalidInputError(ApiError):
    """422: the request was refused; ``fields`` and ``details`` say which field and why. A batch
    with one invalid element is refused whole: nothing of that batch was stored."""


class RateLimitedError(ApiError):
    """429, after the client's retries ran out."""


class ServerError(ApiError):
    """5xx, after the client's retries ran out."""


_BY_STATUS: dict[int, type[ApiError]] = {
    401: AuthenticationError, 403: PermissionDeniedError, 404: NotFoundError,
    409: ConflictError, 413: PayloadTooLargeError, 422: InvalidInputError,
    429: RateLimitedError,
}


def error_from_response(status: int, body: Any, *, index_offset: int = 0) -> ApiError:
    """The exception for an error answer. ``body`` is the decoded JSON (or anything else when
    the answer was not JSON, e.g. from a proxy in front of the server). ``index_offset`` turns a
    batch-relative index into one of the caller's whole list."""
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else ApiError)
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return cls(status, f"http_{status}", "the server answered without ReelRank's error body",
                   sent_before=index_offset)
    details = []
    for d in error.get("details") or []:
        if not isinstance(d, dict):
            continue
        index = d.get("index")
        details.append(ErrorDetail(
            field=str(d.get("field", "")), message=str(d.get("message", "")),
            index=index + index_offset if isinstance(index, int) else None))
    return cls(status, str(error.get("code", f"http_{status}")), str(error.get("message", "")),
               details, sent_before=index_offset)
