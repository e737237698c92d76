"""Keep Python's cyclic garbage collector off the loaded models' objects (``gc.freeze``).

A loaded SavedModel leaves a few hundred thousand tracked Python objects (TensorFlow's function
and trackable graph). CPython's full (generation 2) collection walks all of them, and it runs
whenever the objects that survived younger collections reach a quarter of the old ones. A REST
request of 32 32x32x3 images parses into ~33,000 lists, so every few such requests paid a full
collection: 400-560 ms holding the GIL on this project's 2-core machine, stalling every request
in the process (``py-spy --native`` put 367 of 405 samples of the JSON parse in
``gc_collect_main``).

:func:`settle` collects once and then moves every object alive into the permanent generation
that collections skip (``gc.freeze()``, as long-running CPython servers do), so later collections
walk only what requests create. The repository calls it after each pass that loaded or unloaded a
version: unfreezing first lets the collection reclaim an unloaded version's cycles. The
collection itself holds the GIL once (~0.5 s here) per version change instead of every few large
requests. :func:`release` unfreezes when the last server using it stops.

:func:`paused` turns collections off while a REST request body is parsed and turned into arrays:
the ~33,000 lists of a batch of 32 images are all alive until then, so the ~50 young and the
full collections they triggered walked them for nothing (``py-spy --native``: 102 of 384 samples
of the parse in ``gc_collect_main``, with the heap frozen). They are freed by reference counting
before the pause ends.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from collections.abc import Iterator

_lock = threading.Lock()
_users = 0
_pauses = 0
_paused_enabled = False  # whether the collector was on when the first pause began


def settle() -> float:
    """Collect garbage now, then exempt every live object from later collections.

    Returns:
        the seconds it took.
    """
    start = time.perf_counter()
    with _lock:
        gc.unfreeze()
        gc.collect()
        gc.freeze()
    return time.perf_counter() - start


def acquire() -> None:
    """Note one more user (a running repository) of the frozen heap."""
    global _users
    with _lock:
        _users += 1


def release() -> None:
    """One user fewer; the last one gives every frozen object back to the collector."""
    global _users
    with _lock:
        _users = max(0, _users - 1)
        if _users == 0:
            gc.unfreeze()


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Collections off inside (re-entrant and thread-safe: on again when the last pause ends)."""
    global _pauses, _paused_enabled
    with _lock:
        if _pauses == 0:
            _paused_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _lock:
            _pauses -= 1
            if _pauses == 0 and _paused_enabled:
                gc.enable()


def frozen() -> int:
    """How many objects the collector currently skips."""
    return gc.get_freeze_count()


__all__ = ["acquire", "frozen", "paused", "release", "settle"]
