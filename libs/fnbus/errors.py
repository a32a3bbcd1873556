"""API errors, rendered as ``{"error": {"code": ..., "message": ...}}``.

ApiError (500)
 ├── BadRequest (400)
 │    └── MalformedJson (400)
 ├── Unauthorized (401)
 ├── Forbidden (403)
 ├── NotFound (404)
 ├── Conflict (409)
 ├── PayloadTooLarge (413)
 ├── Unprocessable (422)
 ├── TooManyRequests (429)
 └── UpstreamUnavailable (503)

Services raise these; exception handlers installed by
:func:`fnbus.service.create_service_app` turn them into responses.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class MalformedJson(BadRequest):
    code = "malformed_json"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class Unprocessable(ApiError):
    status = 422
    code = "unprocessable"


class TooManyRequests(ApiError):
    status = 429
    code = "too_many_requests"


class UpstreamUnavailable(ApiError):
    status = 503
    code = "unavailable"


_BY_STATUS = {
    cls.status: cls
    for cls in (BadRequest, Unauthorized, Forbidden, NotFound, Conflict, PayloadTooLarge,
                Unprocessable, TooManyRequests, UpstreamUnavailable)
}


def from_body(status: int, body: Any) -> ApiError:
    """Rebuild an error another service answered with (gateway → registry calls)."""
    cls = _BY_STATUS.get(status, ApiError)
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        exc = cls(str(err.get("message", "")), code=err.get("code"), details=err.get("details"))
    else:
        exc = cls(f"upstream answered {status}")
    exc.status = status
    return exc
