"""The server's error type: a TF Serving status code, its HTTP status and a message.

TF Serving answers errors as ``{"error": "<message>"}`` with the status mapped from its canonical
code: INVALID_ARGUMENT / FAILED_PRECONDITION / OUT_OF_RANGE -> 400, NOT_FOUND -> 404,
RESOURCE_EXHAUSTED -> 429, UNAVAILABLE -> 503, UNIMPLEMENTED -> 501, INTERNAL / UNKNOWN -> 500.
kerasdl adds 413 (body over the configured size) and 408 (body not sent in time).
"""

from __future__ import annotations

HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "REQUEST_TIMEOUT": 408,
    "PAYLOAD_TOO_LARGE": 413,
    "RESOURCE_EXHAUSTED": 429,
    "UNAVAILABLE": 503,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
}


class ServingError(Exception):
    """An error answered to the client as ``{"error": message}`` with ``status``.

    Args:
        code: a key of :data:`HTTP_STATUS` (TF Serving's canonical code names).
        message: what was wrong, naming the offending input, model, version or signature.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def status(self) -> int:
        return HTTP_STATUS[self.code]


def invalid(message: str) -> ServingError:
    """A 400 INVALID_ARGUMENT error."""
    return ServingError("INVALID_ARGUMENT", message)


def not_found(message: str) -> ServingError:
    """A 404 NOT_FOUND error."""
    return ServingError("NOT_FOUND", message)
