"""What a user meets around the commands: error lines, option names and help, documented paths,
and output free of TensorFlow's start-up chatter, decoder messages and Keras warnings."""

from __future__ import annotations

import argparse
import logging
import re
import warnings
from pathlib import Path

import pytest

from kerasdl.cli import build_parser
from kerasdl.config import apply_override, read_yaml
from kerasdl.errors import UserError

REPO = Path(__file__).resolve().parents[1]
TF_CHATTER = ("cuInit", "oneDNN", "TF_ENABLE_ONEDNN_OPTS", "cuda_", "absl::InitializeLog")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


# --- recipe errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("model:\n  name: x\n\tfoo: 1\n", "line 3, column 1"),  # tab
        ("training:\n  epochs: 3\n batch_size: 4\n", "line 3, column 2"),  # dedent
        ("model: [unclosed\n", "line 1, column 8"),  # noticed at the end of the file, line 2
        ("run:\n  name: 'abc\n  seed: 1\n", "line 2, column 9"),  # unclosed quote
        ("a: 1\nmodel:\n  filters: [4, 8\n  name: x\n", "started at line 3, column 12"),
    ],
)
def test_yaml_errors_name_the_line_a_user_sees(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        read_yaml(path)
    assert "not valid YAML at line " in str(info.value) and where in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_override_value_is_one_line() -> None:
    with pytest.raises(UserError) as info:
        apply_override({}, "model.filters=[1,")
    assert "--set model.filters: cannot parse value '[1,'" in str(info.value)
    assert "\n" not in str(info.value)


# --- options ------------------------------------------------------------------------------------


def test_probe_says_out_and_still_takes_output(capsys: pytest.CaptureFixture) -> None:
    probe = _subparsers()["probe"]
    assert probe.parse_args(["run", "--out", "a.json"]).out == "a.json"
    assert "--out" in probe.format_help() and "--output" not in probe.format_help()
    assert probe.parse_args(["run", "--output", "b.json"]).out == "b.json"
    assert "--output is deprecated; use --out" in capsys.readouterr().err


def test_no_command_names_its_output_option_output() -> None:
    for name, parser in _subparsers().items():
        visible = [a for a in parser._actions if a.help != argparse.SUPPRESS]
        shown = [s for a in visible for s in a.option_strings]
        assert "--output" not in shown, name


@pytest.mark.parametrize("command", list(_subparsers()))
def test_every_option_has_help(command: str) -> None:
    parser = _subparsers()[command]
    missing = [a.option_strings or a.dest for a in parser._actions if not a.help]
    assert not missing, f"kerasdl {command}: options without help: {missing}"


def test_bench_help_quotes_the_measured_suite_times() -> None:
    from kerasdl.commands import bench

    text = (REPO / "benchmarks" / "README.md").read_text()
    for suite in ("default", "defaults"):
        minutes = re.search(rf"^Suite `{suite}`, [^\n]*?([\d.]+) min\.", text, re.M).group(1)
        assert minutes in bench.DESCRIPTION, suite
        line = next(ln for ln in bench.DESCRIPTION.splitlines() if f"--suite {suite} " in ln)
        assert f"~{round(float(minutes))} min" in line, line


# --- documented paths ---------------------------------------------------------------------------


def test_every_recipe_path_in_docs_and_apps_exists() -> None:
    files = [*REPO.glob("docs/*.md"), REPO / "README.md", *REPO.glob("apps/*.py")]
    files += [*REPO.glob("kerasdl/commands/*.py")]  # command help quotes recipes too
    stale = []
    for f in files:
        for path in re.findall(r"configs/[\w./-]+?\.yaml", f.read_text()):
            if not (REPO / path).is_file():
                stale.append(f"{f.relative_to(REPO)}: {path}")
    assert not stale, stale


# --- quiet output -------------------------------------------------------------------------------


# An app's quiet start (FixMatch: TensorFlow imported quietly by kerasdl.cli.quiet_tensorflow,
# the mechanism the ``kerasdl`` command defers to the first import; no Keras warnings) is checked
# on the run tests/test_methods_apps.py::test_fixmatch_and_simclr_apps_smoke makes of the app
# anyway (one smoke run of it instead of two), with TF_CHATTER from here.


def _write_folder(root: Path) -> None:
    import io

    import numpy as np
    from PIL import Image
    from tiny_models import write_image_folder

    write_image_folder(root, 5, (8, 8))
    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
    (root / "cat" / "truncated.jpg").write_bytes(buf.getvalue()[:200])


def test_corrupt_image_is_one_warning_line_on_fd2(
    tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    """libjpeg prints its own complaint on file descriptor 2 (not sys.stderr): captured at the
    descriptor, only kerasdl's warnings remain, each with the decoder's reason."""
    from kerasdl.config import DataConfig
    from kerasdl.data.sources import load_folder_source

    _write_folder(tmp_path / "imgs")
    capfd.readouterr()
    cfg = DataConfig(source="folder", path=str(tmp_path / "imgs"), val_split=0.2, test_split=0.2)
    raw = load_folder_source(cfg, seed=0)
    err = capfd.readouterr().err.splitlines()
    assert sum(raw.sizes.values()) == 10
    assert len(err) == 2, err
    assert all(ln.startswith("warning: skipped corrupt or unreadable image: ") for ln in err)
    assert "broken.jpg (" in err[1] and "marker" in err[1] and "truncated.jpg (" in err[0]


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _quietly(fn) -> tuple[list[str], list[str]]:
    """Run ``fn``; return the warnings raised and TensorFlow's log messages meanwhile."""
    import tensorflow as tf

    handler = _Records()
    tf.get_logger().addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
    finally:
        tf.get_logger().removeHandler(handler)
    return [f"{w.category.__name__}: {w.message}" for w in caught], handler.messages


@pytest.mark.parametrize("name", ["simclr", "moco"])
def test_contrastive_training_emits_no_warnings(name: str) -> None:
    """A backbone with a classification head: SimCLR trains its features, not the head (which
    would get no gradient: Keras warned once per run)."""
    import keras
    import numpy as np
    import tensorflow as tf

    import kerasdl
    from kerasdl.data import ssl
    from kerasdl.methods import build_method

    images = np.random.default_rng(0).random((64, 8, 8, 1)).astype("float32")
    labels = np.zeros(64, "int64")
    views = ssl.contrastive_dataset(
        tf.data.Dataset.from_tensor_slices((images, labels)), 16, seed=0
    )
    net = kerasdl.create_model("simple_cnn", num_classes=10, input_shape=(8, 8, 1), filters=[4])
    extra = {"queue_size": 32} if name == "moco" else {}
    method = build_method(name, net, 10, projection_dim=8, seed=0, **extra)
    method.compile(keras.optimizers.Adam(1e-3))

    def fit() -> None:
        method.fit(views, epochs=2, verbose=0, shuffle=False)

    caught, logged = _quietly(fit)
    assert not caught, caught
    assert not [m for m in logged if "retracing" in m], logged


def test_probes_of_two_backbones_do_not_retrace() -> None:
    import numpy as np

    import kerasdl
    from kerasdl.methods.probes import run_probes

    rng = np.random.default_rng(0)
    train = (rng.random((100, 8, 8, 1), np.float32), rng.integers(0, 10, 100))
    test = (rng.random((360, 8, 8, 1), np.float32), rng.integers(0, 10, 360))

    def probe_twice() -> None:
        for _ in range(2):  # as a method run: the trained backbone, then a random-init one
            net = kerasdl.create_model(
                "simple_cnn", num_classes=10, input_shape=(8, 8, 1), filters=[4]
            )
            run_probes(net, train, test)

    caught, logged = _quietly(probe_twice)
    assert not [m for m in logged if "retracing" in m], logged


def test_darts_search_emits_no_warnings(tmp_path: Path) -> None:
    from kerasdl.nas.config import load_search_recipe
    from kerasdl.nas.runner import run_search

    recipe = tmp_path / "s.yaml"
    recipe.write_text(
        "search: {layers: 1, init_channels: 2, nodes: 1, epochs: 1, batch_size: 128}\n"
        "data: {source: digits, image_size: 8}\n"
        f"run: {{name: s, output_dir: '{tmp_path}/runs'}}\n"
    )
    cfg = load_search_recipe(recipe)
    caught, logged = _quietly(lambda: run_search(cfg, verbose=0))
    assert not caught, caught
    assert not [m for m in logged if "retracing" in m], logged
