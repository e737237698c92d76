"""The server's limits against hostile or broken clients, and their command-line options.

Every limit bounds one resource a client could otherwise hold or exhaust:

* ``max_image_pixels`` -- encoded images sent to a string input are measured from their header
  (:mod:`kerasdl.serving.images`) and refused before the graph decodes them (decompression bombs);
  ``None`` = derived from the model's input size, at least :data:`MIN_IMAGE_PIXELS`;
* ``header_timeout`` -- seconds a connection may take to send a request's headers (from its first
  byte, or from the connection's opening); slower connections get 408 and are closed (slowloris);
* ``body_timeout`` -- seconds a request may take to send its body once its headers are in (408);
* ``max_connections`` -- open connections at once; more are answered 503 and closed.

The body size (``--max-body-bytes``), the batch size (``--max-batch``) and the idle keep-alive time
(``--keep-alive-timeout``) are options of ``kerasdl serve`` too; docs/serving.md lists them all.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

MIN_IMAGE_PIXELS = 4096 * 4096  # a 16-megapixel camera photo fits
IMAGE_AREA_FACTOR = 256  # 16x the model's input side in each direction
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_BODY_TIMEOUT_S = 60.0
DEFAULT_MAX_CONNECTIONS = 1000
MAX_JSON_DEPTH = 64  # numpy's largest rank; deeper request JSON is refused (400)


@dataclass(frozen=True)
class Limits:
    """Limits on what one client can make the server hold.

    Args:
        max_image_pixels: most pixels an encoded input image may decode to (all frames of an
            animation counted); ``None`` = ``max(MIN_IMAGE_PIXELS, 256 * H * W)`` for a model whose
            image input is ``H x W``.
        header_timeout: seconds to receive a request's headers (408 and close after).
        body_timeout: seconds to receive a request's body once its headers are in (408 after).
        max_connections: open connections at once (503 and close for more).
    """

    max_image_pixels: int | None = None
    header_timeout: float = DEFAULT_HEADER_TIMEOUT_S
    body_timeout: float = DEFAULT_BODY_TIMEOUT_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    def __post_init__(self) -> None:
        if self.max_image_pixels is not None and self.max_image_pixels < 1:
            raise ValueError(f"max_image_pixels must be >= 1. Received: {self.max_image_pixels}")
        for name in ("header_timeout", "body_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0. Received: {getattr(self, name)}")
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be >= 1. Received: {self.max_connections}")


def image_pixel_limit(limits: Limits, input_hw: tuple[int, int] | None) -> int:
    """The pixel limit for a model whose image input is ``input_hw`` (``None``: unknown)."""
    if limits.max_image_pixels is not None:
        return limits.max_image_pixels
    if input_hw is None:
        return MIN_IMAGE_PIXELS
    return max(MIN_IMAGE_PIXELS, IMAGE_AREA_FACTOR * input_hw[0] * input_hw[1])


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--max-image-pixels``, ``--header-timeout``, ``--body-timeout``, ``--max-connections``.

    ``limits_from_args(args)`` turns the parsed values into the :class:`Limits` that
    ``ServerConfig(limits=...)`` carries to the app and to uvicorn.
    """
    parser.add_argument(
        "--max-image-pixels",
        type=int,
        default=None,
        metavar="N",
        help="encoded images over N pixels (width x height, all frames) get 400 before they are "
        f"decoded (default: 256 x the model's input area, at least {MIN_IMAGE_PIXELS:,})",
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=DEFAULT_HEADER_TIMEOUT_S,
        metavar="S",
        help="seconds a client may take to send a request's headers; then 408 and close "
        f"(default {DEFAULT_HEADER_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=DEFAULT_BODY_TIMEOUT_S,
        metavar="S",
        help="seconds a client may take to send a request's body; then 408 "
        f"(default {DEFAULT_BODY_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        metavar="N",
        help=f"open connections at once; more get 503 (default {DEFAULT_MAX_CONNECTIONS})",
    )


def limits_from_args(args: argparse.Namespace) -> Limits:
    """The :class:`Limits` of parsed ``kerasdl serve`` arguments (a bad value: one-line error)."""
    from kerasdl.errors import UserError

    try:
        return Limits(
            max_image_pixels=args.max_image_pixels,
            header_timeout=args.header_timeout,
            body_timeout=args.body_timeout,
            max_connections=args.max_connections,
        )
    except ValueError as err:
        flag = "--" + str(err).split(" ", 1)[0].replace("_", "-")
        raise UserError(f"{flag} {str(err).split(' ', 1)[1]}") from err
