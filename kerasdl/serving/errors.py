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


def tensorflow_message(message: str) -> str:
    """The readable part of a TensorFlow runtime error, without the graph dump.

    A signature called eagerly fails with ``Graph execution error: Detected at node ... defined
    at (most recent call last): <Python stack>`` followed by the op's own message and
    ``[[{{node ...}}]] [Op:...]`` tags. A client needs only the op's message (as TF Serving
    answers it): ``Input to reshape is a tensor with 12 values, but the requested shape has 64``.
    """
    import re

    lines = [ln for ln in message.splitlines() if ln.strip()]
    if lines and lines[0].strip().startswith("Graph execution error"):
        lines = lines[1:]
    # the Python stack: 'Detected at node ...' and the indented frames under it
    kept = [
        ln
        for ln in lines
        if not ln.startswith((" ", "\t")) and not ln.startswith("Detected at node")
    ]
    text = " ".join(kept) if kept else message.strip()
    text = text.replace("<stack traces unavailable>", "")  # TensorFlow's, when it has none
    text = re.sub(r"\s*\[\[\{\{node [^}]*\}\}\]\]", "", text)
    text = re.sub(r"\s*\[Op:[^\]]*\]", "", text)
    return re.sub(r"\s+", " ", text).strip()[:1000] or "the signature rejected the input"
