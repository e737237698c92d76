"""Paired measurement: kerasdl and its peer in two live processes, timed in alternating rounds.

A one-off measurement of each side in turn (:func:`~kerasdl.bench.harness.run_isolated`) compares
two windows a minute or more apart; on a shared VM whose speed drifts within minutes, the same
pair's ratio moved by up to 0.2x between runs (benchmarks/README.md). Here both sides start once,
build their model and warm up, then take turns: round ``r`` times ``steps`` steps of one side and
then of the other, in the order A B, B A, A B, ... (so a drift during a round favours neither side
over the run), with the idle side blocked on its command pipe (no threads busy). Every round gives
one ratio of two measurements taken seconds apart; the pair's ratio is the **median of the round
ratios**, reported with their range.

Training stays Keras ``fit``: one ``fit`` call runs in a thread of the worker and a callback holds
it between rounds (:class:`PausedFit`), so no round pays for ``fit``'s set-up. Each worker is
``python -m kerasdl.bench.worker --paired CASE_JSON`` and speaks one JSON line per command on
stdout (:func:`serve`): ``warm MODE``, ``run MODE N`` (the seconds of ``N`` steps), ``stats``,
``quit``. Every training round comes before the inference rounds.
"""

from __future__ import annotations

import json
import math
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from kerasdl.bench.case import Case, peak_rss_mb, round_steps, throughput

REPLY = "@bench "  # prefix of the worker's replies; TensorFlow and PyTorch may print other lines


class PausedFit:
    """One Keras ``fit`` call that trains ``n`` steps per :meth:`run` and waits in between.

    ``fit`` runs in a daemon thread on a repeated dataset with an effectively endless epoch; a
    callback counts the steps of the current grant and, when they are done, hands back the
    seconds since the grant and blocks until the next one. :meth:`close` stops ``fit``.
    """

    def __init__(self, model: Any, dataset: Any, steps_per_execution: int = 1) -> None:
        import keras

        self._grants: queue.Queue = queue.Queue()
        self._times: queue.Queue = queue.Queue()
        self._left = 0
        self._t0 = 0.0
        self._spe = steps_per_execution
        outer = self

        class Gate(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                outer._wait(self.model)

            def on_train_batch_end(self, batch, logs=None):
                outer._left -= outer._spe
                if outer._left <= 0:
                    outer._times.put(time.perf_counter() - outer._t0)
                    outer._wait(self.model)

        def fit() -> None:
            try:
                model.fit(dataset, epochs=1, steps_per_epoch=2**40, verbose=0, callbacks=[Gate()])
            except BaseException as err:  # noqa: BLE001 - handed to the caller of run()
                self._times.put(err)

        self._thread = threading.Thread(target=fit, name="paused-fit", daemon=True)
        self._thread.start()

    def _wait(self, model: Any) -> None:
        n = self._grants.get()
        if n is None:
            model.stop_training = True
            self._left = 2**62
            return
        self._left = round_steps(n, self._spe)
        self._t0 = time.perf_counter()

    def run(self, steps: int) -> float:
        """Train ``steps`` steps (rounded down to whole executions, at least one); their
        wall-clock seconds."""
        if not self._thread.is_alive():
            raise RuntimeError("fit has stopped")
        self._grants.put(steps)
        got = self._times.get()
        if isinstance(got, BaseException):
            raise got
        return got

    def close(self) -> None:
        if self._thread.is_alive():
            self._grants.put(None)
            self._thread.join()


class KerasSteps:
    """A kerasdl case's model with ``fit`` (as :func:`~kerasdl.bench.harness.keras_train`) and
    ``training=False`` inference (as :func:`~kerasdl.bench.harness.keras_infer`)."""

    def __init__(self, case: Case) -> None:
        import keras
        import tensorflow as tf

        from kerasdl.bench.case import configure_threads, rss_mb, synthetic_batch
        from kerasdl.bench.harness import build_keras_model, compile_for_bench
        from kerasdl.models.macs import count_macs

        configure_threads(case)
        keras.utils.set_random_seed(0)
        self.info: dict[str, Any] = {"rss_before_model_mb": rss_mb()}
        self.model = build_keras_model(case)
        x, y = synthetic_batch(case)
        self.info["params"] = int(self.model.count_params())
        self.info["macs"] = int(count_macs(self.model))
        compile_for_bench(self.model, case)
        dataset = tf.data.Dataset.from_tensors((x, y)).repeat()
        self._fit = PausedFit(self.model, dataset, case.steps_per_execution)
        self._images = tf.constant(x)
        self._infer = tf.function(
            lambda v: self.model(v, training=False), jit_compile=case.jit_compile
        )

    def train(self, n: int) -> float:
        return self._fit.run(n)

    def close(self) -> None:
        """End the paused ``fit`` (training is over)."""
        self._fit.close()

    def infer(self, n: int) -> float:
        self.close()  # training is over once inference starts
        t0 = time.perf_counter()
        for _ in range(n):
            out = self._infer(self._images)
        out.numpy()
        return time.perf_counter() - t0


def make_steps(case: Case) -> Any:
    """The object with ``train(n)``, ``infer(n)`` (seconds) and ``info`` for ``case``."""
    if case.kind == "torch":
        from kerasdl.bench.peers import TorchSteps

        return TorchSteps(case)
    if case.kind in ("kerasdl", "keras_app"):
        return KerasSteps(case)
    raise ValueError(f"a paired case is a model (kerasdl, keras_app or torch), not {case.kind!r}")


def serve(case: Case, commands: IO[str] = sys.stdin, out: IO[str] = sys.stdout) -> int:
    """The worker's side: build ``case``, then answer ``commands`` until ``quit`` or their end."""

    def reply(obj: dict[str, Any]) -> None:
        out.write(REPLY + json.dumps(obj) + "\n")
        out.flush()

    try:
        steps = make_steps(case)
    except Exception as err:  # noqa: BLE001 - reported to the parent, which fails the pair
        reply({"error": f"{type(err).__name__}: {err}"})
        return 1
    reply({"ready": True, **steps.info})
    for line in commands:
        words = line.split()
        try:
            if words[:1] == ["quit"]:
                break
            if words[:1] == ["stats"]:
                reply({"peak_rss_mb": peak_rss_mb()})
            elif len(words) == 3 and words[0] == "run" and words[1] in ("train", "infer"):
                reply({"seconds": getattr(steps, words[1])(int(words[2]))})
            elif len(words) == 3 and words[0] == "warm" and words[1] in ("train", "infer"):
                reply({"seconds": getattr(steps, words[1])(max(int(words[2]), 1))})
            else:
                reply({"error": f"unknown command {line.strip()!r}"})
        except Exception as err:  # noqa: BLE001
            reply({"error": f"{type(err).__name__}: {err}"})
            return 1
    if isinstance(steps, KerasSteps):
        steps.close()
    return 0


class _Worker:
    """A ``--paired`` worker process and a thread that queues its replies."""

    def __init__(self, case: Case) -> None:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        cmd = [sys.executable, "-m", "kerasdl.bench.worker", "--paired", case.to_json()]
        self.case = case
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._replies: queue.Queue = queue.Queue()
        self._stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._drain, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith(REPLY):
                self._replies.put(json.loads(line[len(REPLY) :]))
        self._replies.put(None)

    def _drain(self) -> None:
        for line in self.proc.stderr:
            self._stderr = (self._stderr + [line.rstrip()])[-20:]

    def expect(self, timeout: float) -> dict[str, Any]:
        try:
            got = self._replies.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"{self.case.id}: no answer in {timeout:.0f} s") from None
        if got is None:
            tail = next((ln for ln in reversed(self._stderr) if ln.strip()), "no output")
            raise RuntimeError(f"{self.case.id}: exit {self.proc.wait()}: {tail}")
        if "error" in got:
            raise RuntimeError(f"{self.case.id}: {got['error']}")
        return got

    def call(self, command: str, timeout: float) -> dict[str, Any]:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.expect(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def round_ratios(a: list[float], b: list[float]) -> dict[str, Any]:
    """Median and range of the per-round ratios ``b[i] / a[i]`` of two sides' seconds per round
    (equal steps each: the ratio of A's images/s to B's)."""
    ratios = [tb / ta for ta, tb in zip(a, b, strict=True)]
    return {
        "median": statistics.median(ratios),
        "min": min(ratios),
        "max": max(ratios),
        "ratios": ratios,
    }


def run_paired(
    a: Case,
    b: Case,
    *,
    rounds: int | None = None,
    round_seconds: float = 0.0,
    timeout: float = 1800.0,
    log: Callable[[str], None] = lambda _: None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Measure ``a`` and ``b`` in alternating rounds; each one's result, as ``run_isolated``'s.

    ``a``'s result also holds ``paired``: for each mode, the median and range of the round
    ratios (``a``'s images/s over ``b``'s) and the steps per round. Both take ``a``'s ``steps``
    (rounded down to whole executions of its ``steps_per_execution``), ``warmup`` and modes;
    ``rounds`` defaults to ``a.repeats``. With ``round_seconds``, a round runs as many more
    steps as the slower side needs to take that long (timed on one step of each after the
    warm-up): a one-step round of a small model lasts a fraction of a second, and its ratio is
    then mostly noise. A failure of either side fails both.
    """
    rounds = rounds or a.repeats
    spe = a.steps_per_execution
    base_steps = round_steps(a.steps, spe)  # both sides run the same steps
    t0 = time.perf_counter()
    workers = [_Worker(a), _Worker(b)]
    try:
        infos = [w.expect(timeout) for w in workers]
        results: list[dict[str, Any]] = [
            {k: v for k, v in info.items() if k != "ready"} for info in infos
        ]
        paired: dict[str, Any] = {}
        for mode in [m for m in a.modes if m in b.modes]:
            for w in workers:
                w.call(f"warm {mode} {a.warmup}", timeout)
            steps = base_steps
            if round_seconds > 0:
                step = max(w.call(f"run {mode} {spe}", timeout)["seconds"] / spe for w in workers)
                steps = max(steps, round_steps(math.ceil(round_seconds / max(step, 1e-6)), spe))
            seconds: list[list[float]] = [[], []]
            for r in range(rounds):
                for i in (0, 1) if r % 2 == 0 else (1, 0):
                    seconds[i].append(workers[i].call(f"run {mode} {steps}", timeout)["seconds"])
            for res, w, times in zip(results, workers, seconds, strict=True):
                res[mode] = throughput(times, steps * w.case.batch_size)
                if mode == "train":
                    res["train_peak_rss_mb"] = w.call("stats", timeout)["peak_rss_mb"]
            paired[mode] = {**round_ratios(*seconds), "steps_per_round": steps}
            log(f"[bench] {a.id} / {b.id} {mode}: {paired[mode]['median']:.2f}x per round")
    except (RuntimeError, OSError) as err:
        return {"error": str(err)}, {"error": str(err)}
    finally:
        for w in workers:
            w.close()
    wall = time.perf_counter() - t0
    results[0]["paired"] = {"peer": b.id, "rounds": rounds, **paired}
    for res in results:
        res["wall_seconds"] = wall
    return results[0], results[1]
