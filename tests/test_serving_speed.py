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


def test_with_batching_a_full_batch_skips_the_batcher_over_rest_and_grpc():
    import shutil

    from conftest_serving import UvicornThread, call, fresh_dir, tiny

    from kerasdl.serving.app import ServerConfig, create_app
    from kerasdl.serving.repository import ModelRepository

    base = fresh_dir("full-batch")
    shutil.copytree(tiny(3), base / "m" / "1")
    config = ServerConfig(batching=True, batch_size=2, batch_threads=1, max_batch=5000)
    app = create_app(ModelRepository(base, poll_interval=0), config)
    with UvicornThread(app) as srv:
        batcher = app.state.server.batcher
        status, body = call(srv.port, "POST", "/v1/models/m:predict", {"instances": [[1, 2]]})
        assert (status, body, batcher.batches_run) == (200, {"predictions": [3.0]}, 1)
        two = {"instances": [[1, 2], [3, 4]]}
        status, body = call(srv.port, "POST", "/v1/models/m:predict", two)
        assert (status, body, batcher.batches_run) == (200, {"predictions": [3.0, 3.0]}, 1)
        big = {"instances": [[0.5, 0.25]] * 4000}  # a body parsed in the worker thread
        status, body = call(srv.port, "POST", "/v1/models/m:predict", big)
        assert (status, body, batcher.batches_run) == (200, {"predictions": [3.0] * 4000}, 1)

    pytest.importorskip("grpc")
    from kerasdl.serving.grpc_server import GrpcServer

    grpc_server = GrpcServer(None, config)  # type: ignore[arg-type]
    grpc_server._start_batcher()
    threads: list[str] = []

    class Doubler:
        name = "serving_default"

        def __call__(self, inputs):
            threads.append(threading.current_thread().name)
            return {"y": inputs["x"] * 2}

    sig = Doubler()

    try:
        full = grpc_server._run(None, sig, {"x": np.ones((2, 3), np.float32)})  # type: ignore[arg-type]
        assert (
            threads == [threading.current_thread().name] and grpc_server._batcher.batches_run == 0
        )
        np.testing.assert_array_equal(full["y"], np.full((2, 3), 2.0))
        one = grpc_server._run(None, sig, {"x": np.ones((1, 3), np.float32)})  # type: ignore[arg-type]
        assert threads[1].startswith("tf-grpc") and grpc_server._batcher.batches_run == 1
        np.testing.assert_array_equal(one["y"], np.full((1, 3), 2.0))
    finally:
        grpc_server._loop.call_soon_threadsafe(grpc_server._loop.stop)
        grpc_server._loop_thread.join(timeout=10)
        grpc_server._tf_pool.shutdown(wait=True)


def test_tensorflow_parallelism_options_are_set_before_models_load(tmp_path, capsys):
    import subprocess
    import sys

    from kerasdl.cli import main

    code = (
        "import kerasdl.serving.server as srv; srv.serve = lambda *a, **k: None\n"
        "from kerasdl.cli import build_parser; from kerasdl.commands import serve\n"
        f"serve.run(build_parser().parse_args(['serve', {str(tmp_path)!r}, "
        "'--tensorflow-intra-op-parallelism', '1', '--tensorflow-inter-op-parallelism', '2']))\n"
        "import tensorflow as tf; t = tf.config.threading\n"
        "print(t.get_intra_op_parallelism_threads(), t.get_inter_op_parallelism_threads())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["1", "2"], out.stderr[-2000:]
    assert main(["serve", str(tmp_path), "--tensorflow-intra-op-parallelism", "-1"]) == 2
    assert "--tensorflow-intra-op-parallelism" in capsys.readouterr().err
