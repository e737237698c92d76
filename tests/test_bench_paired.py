"""Paired benchmark measurement: alternating rounds, round-ratio medians, the paused ``fit``."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from kerasdl.bench import Case, markdown, run_suite
from kerasdl.bench import paired as paired_mod
from kerasdl.bench.paired import PausedFit, round_ratios, run_paired
from kerasdl.bench.suites import Comparison, Pair, Suite


class FakeWorker:
    """Stands in for a worker process: answers from a script of seconds per round."""

    calls: list[tuple[str, str]] = []
    seconds: dict[str, list[float]] = {}
    fail: str | None = None

    def __init__(self, case: Case) -> None:
        self.case = case
        self.left = {m: list(FakeWorker.seconds[case.id]) for m in ("train", "infer")}

    def expect(self, timeout: float) -> dict:
        if FakeWorker.fail == self.case.id:
            raise RuntimeError(f"{self.case.id}: exit 1: boom")
        return {"ready": True, "params": 1}

    def call(self, command: str, timeout: float) -> dict:
        FakeWorker.calls.append((self.case.id, command))
        words = command.split()
        if words[0] == "stats":
            return {"peak_rss_mb": 100.0}
        if words[0] == "warm":
            return {"seconds": 9.0}
        return {"seconds": self.left[words[1]].pop(0)}

    def close(self) -> None:
        FakeWorker.calls.append((self.case.id, "close"))


@pytest.fixture
def fake_workers(monkeypatch):
    monkeypatch.setattr(paired_mod, "_Worker", FakeWorker)
    FakeWorker.calls, FakeWorker.fail = [], None
    return FakeWorker


def test_rounds_alternate_and_the_ratio_is_the_median_of_round_ratios(fake_workers):
    # A's seconds per round; B is 2x slower in rounds 0-2 and 0.5x in round 3 (a drift burst):
    # the median of the round ratios is 2.0, the ratio of the medians would not be.
    fake_workers.seconds = {"a": [1.0, 1.0, 4.0, 1.0], "b": [2.0, 2.0, 8.0, 0.5]}
    a = Case(id="a", model="m", batch_size=4, steps=1, warmup=1, repeats=4)
    b = Case(id="b", kind="torch", model="m", batch_size=4, steps=1, warmup=1, repeats=4)
    ra, rb = run_paired(a, b)
    runs = [(cid, cmd) for cid, cmd in fake_workers.calls if cmd.startswith("run train")]
    assert [cid for cid, _ in runs] == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert ra["paired"]["train"]["median"] == pytest.approx(2.0)
    assert ra["paired"]["train"]["ratios"] == pytest.approx([2.0, 2.0, 2.0, 0.5])
    assert ra["paired"]["peer"] == "b" and ra["paired"]["rounds"] == 4
    assert ra["train"]["median"] == pytest.approx(4.0) and rb["train"]["median"] == 2.0
    assert ra["train_peak_rss_mb"] == rb["train_peak_rss_mb"] == 100.0
    assert ("a", "warm train 1") in fake_workers.calls
    last_train = max(i for i, (_, c) in enumerate(fake_workers.calls) if "train" in c)
    first_infer = min(i for i, (_, c) in enumerate(fake_workers.calls) if "infer" in c)
    assert last_train < first_infer  # every training round before inference
    assert fake_workers.calls[-2:] == [("a", "close"), ("b", "close")]


class TimedWorker(FakeWorker):
    """Seconds proportional to the steps: ``per_step[case id]`` each."""

    per_step: dict[str, float] = {}

    def call(self, command: str, timeout: float) -> dict:
        FakeWorker.calls.append((self.case.id, command))
        words = command.split()
        if words[0] == "stats":
            return {"peak_rss_mb": 1.0}
        return {"seconds": int(words[2]) * TimedWorker.per_step[self.case.id]}


def test_round_seconds_sets_the_steps_of_a_round_by_the_slower_side(monkeypatch):
    monkeypatch.setattr(paired_mod, "_Worker", TimedWorker)
    FakeWorker.calls, FakeWorker.fail = [], None
    TimedWorker.per_step = {"a": 0.3, "b": 0.4}  # b is slower: 2 s need 5 steps of it
    a = Case(id="a", batch_size=4, steps=1, warmup=1, repeats=2, steps_per_execution=1)
    b = Case(id="b", kind="torch", batch_size=4, steps=1, warmup=1, repeats=2)
    ra, _ = run_paired(a, b, round_seconds=2.0)
    train = [cmd for _, cmd in FakeWorker.calls if cmd.startswith("run train")]
    assert train == ["run train 1", "run train 1"] + ["run train 5"] * 4  # one step each, then
    assert ra["paired"]["train"]["steps_per_round"] == 5
    assert ra["paired"]["train"]["median"] == pytest.approx(0.4 / 0.3)
    assert ra["train"]["median"] == pytest.approx(4 / 0.3)  # images per second
    FakeWorker.calls = []
    ra, _ = run_paired(a, b)  # no round_seconds: the case's steps, no timing step
    assert [c for _, c in FakeWorker.calls if c.startswith("run train")] == ["run train 1"] * 4


def test_one_side_failing_fails_both_and_stops_both(fake_workers):
    fake_workers.seconds = {"a": [1.0], "b": [1.0]}
    fake_workers.fail = "b"
    ra, rb = run_paired(Case(id="a", repeats=1), Case(id="b", kind="torch", repeats=1))
    assert ra == rb == {"error": "b: exit 1: boom"}
    assert ("a", "close") in fake_workers.calls and ("b", "close") in fake_workers.calls


def test_round_ratios():
    got = round_ratios([1.0, 2.0, 1.0], [1.5, 2.0, 3.0])
    assert got["ratios"] == [1.5, 1.0, 3.0] and got["median"] == 1.5
    assert (got["min"], got["max"]) == (1.0, 3.0)


def test_paired_suite_reports_round_medians_with_their_range(fake_workers, tmp_path):
    fake_workers.seconds = {"k": [1.0, 1.0, 1.0], "t": [1.2, 1.5, 1.3]}
    cases = [
        Case(id="k", model="m", batch_size=2, steps=1, repeats=3),
        Case(id="t", kind="torch", model="m", batch_size=2, steps=1, repeats=3),
    ]
    suite = Suite(
        "pairs",
        cases,
        [Comparison("M train vs PyTorch", "k", "t", target=1.2)],
        [Pair("M", "k", "t")],
        paired=True,
    )
    report = run_suite(suite, log=lambda _: None, partial_dir=tmp_path)
    (row,) = report["comparisons"]
    assert row["ratio"] == pytest.approx(1.3) and row["met"] is True
    assert row["ratio_range"] == pytest.approx([1.2, 1.5])
    text = markdown(report)
    assert "| 1.30x (1.20-1.50) | >= 1.2x | yes |" in text
    assert "| M | fp32 | 2.0 / 1.5 | 1.30x (1.20-1.50) |" in text


def test_paused_fit_trains_exactly_the_granted_steps():
    import keras
    import tensorflow as tf

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse", steps_per_execution=2)
    data = tf.data.Dataset.from_tensors((np.ones((4, 3)), np.zeros((4, 2)))).repeat()
    fit = PausedFit(model, data, steps_per_execution=2)
    try:
        assert fit.run(2) > 0
        assert int(model.optimizer.iterations) == 2
        fit.run(5)  # rounded down to whole executions of 2 steps
        assert int(model.optimizer.iterations) == 6
    finally:
        fit.close()
    assert not fit._thread.is_alive()
    with pytest.raises(RuntimeError, match="fit has stopped"):
        fit.run(1)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch extra not installed")
def test_zoo_pair_runs_as_two_live_workers(tmp_path):
    """The real workers: kerasdl's fit and PyTorch's loop answer the parent's rounds."""
    from kerasdl.bench.suites import zoo_suite

    suite = zoo_suite(quick=True, models=["resnet20"], precisions=["float32"])
    for case in suite.cases:
        case.repeats = 2
    suite.cases = [c for c in suite.cases if c.kind != "matmul"]
    report = run_suite(suite, log=lambda _: None, partial_dir=tmp_path)
    k = report["results"]["resnet20_fp32"]["result"]
    t = report["results"]["torch_resnet20_fp32"]["result"]
    assert "error" not in k and "error" not in t, (k, t)
    for metric in ("train", "infer"):
        assert k[metric]["repeats"] == t[metric]["repeats"] == 2
        rounds = k["paired"][metric]["ratios"]
        assert len(rounds) == 2 and all(r > 0 for r in rounds)
    assert t["params"] == 269_722 and k["params"] >= t["params"]  # + batch-norm statistics
    assert k["train_peak_rss_mb"] > 0 and t["train_peak_rss_mb"] > 0
    assert {c["ratio_range"] is not None for c in report["comparisons"]} == {True}


def test_without_torch_the_kerasdl_side_is_measured_alone(fake_workers, monkeypatch):
    """No torch extra: the pair is not started together; each case runs on its own, so
    kerasdl's figures survive and the peer fails with its one line."""
    import kerasdl.bench.report as report_mod

    monkeypatch.setattr(report_mod, "find_spec", lambda name: None)
    ran = []

    def isolated(case):
        ran.append(case.id)
        if case.kind == "torch":
            return {"error": "exit 1: ModuleNotFoundError: No module named 'torch'"}
        return {"train": {"median": 5.0}}

    monkeypatch.setattr(report_mod, "run_isolated", isolated)
    cases = [Case(id="k", model="m"), Case(id="t", kind="torch", model="m")]
    suite = Suite("pairs", cases, [], [Pair("M", "k", "t")], paired=True)
    report = run_suite(suite, log=lambda _: None)
    assert ran == ["k", "t"] and fake_workers.calls == []
    assert report["results"]["k"]["result"]["train"]["median"] == 5.0
    assert "No module named" in report["results"]["t"]["result"]["error"]
