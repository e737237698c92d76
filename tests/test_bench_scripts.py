"""benchmarks/onednn_kernels.py: how it reads oneDNN's verbose log, and its user errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "onednn_kernels.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("onednn_kernels", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _exec(kind: str, impl: str, prop: str, ms: float) -> str:
    return f"onednn_verbose,v1,primitive,exec,cpu,{kind},{impl},{prop},src:f32,,,mb16ic64,{ms}"


def test_kernels_sums_the_marked_steps_primitives(script) -> None:
    conv = ("convolution", "jit:avx2", "backward_weights")
    log = "\n".join(
        [
            _exec(*conv, 99.0),  # a warm-up step: before the marker, not counted
            script.MARK,
            _exec(*conv, 1.5),
            "onednn_verbose,v1,primitive,create:cache_miss,cpu,convolution,jit:avx2,x,,,,3.0",
            _exec(*conv, 2.5),
            _exec("reorder", "jit:uni", "undef", 0.25),
            f"{script.END} 0.452",
            _exec(*conv, 77.0),  # after the step
        ]
    )
    table, seconds = script.kernels(log)
    assert seconds == 0.452
    assert dict(table) == {conv: [2, 4.0], ("reorder", "jit:uni", "undef"): [1, 0.25]}


def test_a_side_that_did_not_finish_is_one_line_with_its_last_error(script) -> None:
    with pytest.raises(SystemExit, match="did not finish: ValueError: bad shape$"):
        script.kernels("loading\n", "Traceback ...\n  File x\nValueError: bad shape\n")


def test_an_unknown_model_is_one_line_and_exit_status_2(script, capsys) -> None:
    assert script.main(["nosuch", "32", "2", "10"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: Unknown model 'nosuch'")
