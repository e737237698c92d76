"""The server's speed changes keep its behaviour: same arrays, same errors, collector restored."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest

from kerasdl.serving import codec, heap
from kerasdl.serving.errors import ServingError
from kerasdl.serving.servable import TensorInfo

F32 = TensorInfo("images", np.dtype(np.float32), "DT_FLOAT", (None, 2, 3))
I32 = TensorInfo("ids", np.dtype(np.int32), "DT_INT32", (None, 2, 3))
ANY = TensorInfo("x", np.dtype(np.float32), "DT_FLOAT", None)

VALUES = [
    [[[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]],
    [[[1, 2, 3], [4, 5, 6]], [[7, 8, 9], [10, 11, 12]]],  # ints: int64, then cast
    [[[1, 2.5, 3], [4, 5, -0.0]]],  # mixed: float64
    [[[-0, 1, 2], [3, 4, 5]]],
    [[[True, 1.5, 2], [3, 4, 5]]],  # bool among floats: float64 in numpy too
    [[[True, False, True], [False, True, False]]],  # bool: a type error
    [[["a", "b", "c"], ["d", "e", "f"]]],  # strings: a type error
    [[[None, 1.0, 2.0], [3.0, 4.0, 5.0]]],  # null: object
    [[[1.0, 2.0], [3.0, 4.0, 5.0]]],  # ragged
    [[[1.0, 2.0, 3.0], 4.0]],  # a number beside lists
    [[[1.0, [2.0], 3.0], [4.0, 5.0, 6.0]]],  # too deep in one place
    [[[], []]],  # empty
    [[[1e308, 1e308, 1e308], [1e308, 1e308, 1e308]]],  # overflows float32
    [[[2**70, 1.5, 0.0], [0.0, 0.0, 0.0]]],  # a huge int among floats
    [[[{"a": 1}, 1.0, 2.0], [3.0, 4.0, 5.0]]],
    [[[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]] * 3,
    [1.0, 2.0],
    [[1.0, 2.0]],
    5.0,
    [],
]


def _decode(value, info):
    try:
        arr = codec.to_array(value, info, "serving_default")
    except ServingError as err:
        return ("error", err.status, err.message)
    return ("array", arr.dtype, arr.shape, arr.tobytes())


@pytest.mark.parametrize("info", [F32, I32, ANY], ids=["float32", "int32", "any-shape"])
@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_fast_decode_gives_the_general_paths_arrays_and_errors(value, info, monkeypatch):
    fast = _decode(value, info)
    monkeypatch.setattr(codec, "_dense", lambda value: None)  # the general path only
    assert fast == _decode(value, info)


def test_fast_decode_is_used_and_exact_for_an_image_batch():
    x = np.random.default_rng(0).random((4, 8, 8, 3), dtype=np.float32)
    value = x.tolist()
    dense = codec._dense(value)
    assert dense is not None and dense.dtype == np.float64 and dense.shape == (4, 8, 8, 3)
    np.testing.assert_array_equal(dense, np.array(value))
    info = TensorInfo("images", np.dtype(np.float32), "DT_FLOAT", (None, 8, 8, 3))
    np.testing.assert_array_equal(codec.to_array(value, info, "s"), x)
    deep = 1.0
    for _ in range(70):
        deep = [deep]
    assert codec._dense(deep) is None  # deeper than numpy's ranks: numpy's own error


def test_paused_collector_is_reentrant_threadsafe_and_restored():
    assert gc.isenabled()
    with heap.paused():
        assert not gc.isenabled()
        with heap.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()

    inside, release = threading.Barrier(3), threading.Event()

    def hold():
        with heap.paused():
            inside.wait()
            release.wait(5)

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for t in threads:
        t.start()
    inside.wait()
    assert not gc.isenabled()
    release.set()
    for t in threads:
        t.join()
    assert gc.isenabled()

    gc.disable()
    try:
        with heap.paused():
            pass
        assert not gc.isenabled()  # off before: left off
    finally:
        gc.enable()


def test_settle_freezes_the_heap_and_the_last_release_unfreezes():
    gc.unfreeze()
    heap.acquire()
    heap.acquire()
    try:
        heap.settle()
        assert heap.frozen() > 0
        heap.release()
        assert heap.frozen() > 0  # one user left
    finally:
        heap.release()
    assert heap.frozen() == 0


def test_repository_freezes_after_loading_and_unfreezes_when_stopped():
    import shutil

    from conftest_serving import fresh_dir, tiny

    from kerasdl.serving.repository import ModelRepository

    base = fresh_dir("freeze")
    shutil.copytree(tiny(1), base / "m" / "1")
    gc.unfreeze()
    repo = ModelRepository(base, poll_interval=0, freeze_heap=True)
    repo.start()
    try:
        assert heap.frozen() > 0  # settled after the first load
        assert repo.get("m").version == 1
    finally:
        repo.stop()
    assert heap.frozen() == 0
    plain = ModelRepository(base, poll_interval=0)
    plain.start()
    try:
        assert heap.frozen() == 0  # off by default: the process's collector is left alone
    finally:
        plain.stop()
