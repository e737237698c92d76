"""The CLI answers before TensorFlow loads: --help, --version, and every bad recipe or argument.

A bad recipe must not take as long to fail as importing TensorFlow (4 s idle, 20+ s under load):
the recipe schema is pure pydantic (the model section is checked against the registry manifest,
kerasdl/registry_manifest.json), command modules import nothing heavy, and TensorFlow is imported
(quietly) only by a command that needs it, after its arguments and recipe are validated.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

import kerasdl
from kerasdl import registry

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("tensorflow", "keras")


def _python(code: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def test_command_modules_help_and_version_import_no_tensorflow() -> None:
    code = """
import contextlib, io, json, pkgutil, sys
import kerasdl, kerasdl.config, kerasdl.methods, kerasdl.methods.params, kerasdl.commands
from kerasdl.cli import build_parser, main
for info in pkgutil.iter_modules(kerasdl.commands.__path__):
    __import__(f"kerasdl.commands.{info.name}")
build_parser()
out = {}
for argv in (["--help"], ["--version"], *([c, "--help"] for c in build_parser()._subparsers
        ._group_actions[0].choices)):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):
        main(argv)
    out[" ".join(argv)] = buf.getvalue()
print(json.dumps({"heavy": [m for m in ("tensorflow", "keras") if m in sys.modules], "out": out}))
"""
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["heavy"] == []
    assert result["out"]["--version"].strip() == f"kerasdl {version('kerasdl')}"
    assert "COMMAND" in result["out"]["--help"] and "--version" in result["out"]["--help"]
    assert "--set" in result["out"]["train --help"]
    assert len(result["out"]) > 10  # every command's --help ran


# Runs ``kerasdl`` with TensorFlow and Keras made unimportable: a command that imports them
# before it fails fails with a traceback (exit 1) naming the import, instead of exit 2.
NO_TF = """
import importlib.abc, sys


class NoHeavyImports(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in ("tensorflow", "keras"):
            raise ImportError(f"{fullname} imported before the error")
        return None


sys.meta_path.insert(0, NoHeavyImports())
from kerasdl.cli import main

sys.exit(main(sys.argv[1:]))
"""


def _kerasdl_without_tensorflow(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", NO_TF, *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


BAD_RECIPES = [
    pytest.param(
        "training:\n  epochs: 3\n batch_size: 4\n", [], "not valid YAML at line 3", id="bad_yaml"
    ),
    pytest.param("", ["training.epochs=-1"], "training.epochs: Input should be greater", id="neg"),
    pytest.param("", ["training.epochz=3"], "Unknown key 'training.epochz'", id="unknown_key"),
    pytest.param("", ["model.name=resnet9000"], "Unknown model 'resnet9000'", id="unknown_model"),
    pytest.param("", ["model.filter=[4]"], "Did you mean 'filters'?", id="unknown_model_arg"),
    pytest.param(
        "method: {name: fixmatch, tau: 0.9}\n",
        [],
        "Unknown key 'method.tau' for method 'fixmatch'",
        id="unknown_method_param",
    ),
    pytest.param(
        "method: {name: simclr, temperature: 0}\n", [], "method.temperature", id="bad_method_value"
    ),
    pytest.param("", ["method.name=fixmatsh"], "Unknown method 'fixmatsh'", id="unknown_method"),
    pytest.param(
        "data: {augment: [{name: cutout, sise: 0.5}]}\n",
        [],
        "Unknown key 'sise'",
        id="bad_augment",
    ),
]


@pytest.mark.parametrize(("text", "overrides", "needle"), BAD_RECIPES)
def test_bad_recipe_fails_before_tensorflow_is_imported(
    tmp_path: Path, text: str, overrides: list[str], needle: str
) -> None:
    args = []
    if text:
        (tmp_path / "bad.yaml").write_text(text)
        args.append("bad.yaml")
    for o in overrides:
        args += ["--set", o]
    proc = _kerasdl_without_tensorflow(["train", *args], tmp_path)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("kerasdl train: error: "), lines
    assert needle in lines[0]
    assert not (tmp_path / "runs").exists()


def test_bad_recipe_needs_no_tensorflow_import_time(tmp_path: Path) -> None:
    """The same, measured as a user runs it: ``python -X importtime -m kerasdl train``."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "kerasdl", "train", "--set", "model.name=x"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    lines = [ln for ln in proc.stderr.splitlines() if not ln.startswith("import time:")]
    imported = {ln.rsplit("|", 1)[-1].strip() for ln in proc.stderr.splitlines()}
    assert proc.returncode == 2 and len(lines) == 1 and "Unknown model 'x'" in lines[0]
    assert not imported & set(HEAVY)
    assert not (tmp_path / "runs").exists()


def test_bad_arguments_of_other_commands_fail_before_tensorflow(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text("search: {layerz: 1}\n")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("training: {epochs: 0}\n")
    for args, needle in [
        (["probe", "nothing"], "expected a run folder or an existing .keras file"),
        (["search", "s.yaml"], "Unknown key 'search.layerz'"),
        (["search", "s.yaml", "--set", "run"], "expected key.sub=value"),
        (["evaluate", "nothing"], "not found: nothing"),
        (["evaluate", "run"], "training.epochs: Input should be greater than 0"),
        (["evaluate", "run", "--recipe", "s.yaml"], "Unknown key 'search'"),
        (["export", "nothing"], "No such run folder or .keras file: nothing"),
        (["export", "run", "--version", "0"], "--version must be a positive integer"),
        (["predict", "run", "no.png"], "Image file not found: no.png"),
        (["lr-find", "s.yaml"], "Unknown key 'search'"),
        (["lr-find", "--steps", "2"], "--steps: expected at least 5"),
        (["augment-preview", "s.yaml", "--out", "p.png"], "Unknown key 'search'"),
    ]:
        proc = _kerasdl_without_tensorflow(args, tmp_path)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert len(proc.stderr.splitlines()) == 1, (args, proc.stderr)
        (line,) = proc.stderr.splitlines()
        assert line.startswith(f"kerasdl {args[0]}: error: ") and needle in line


def test_registry_manifest_is_current() -> None:
    """The manifest kerasdl.config validates ``model:`` against is generated from the registry."""
    path = Path(registry.__file__).with_name(registry.MANIFEST_NAME)
    stored = json.loads(path.read_text()) if path.is_file() else None
    assert stored == registry.model_manifest(), (
        f"{path.relative_to(REPO)} is out of date with the model registry; "
        "refresh it with: python -m kerasdl.registry"
    )


def test_recipe_accepts_what_create_model_accepts() -> None:
    from kerasdl.config import _model_arguments

    registry.ensure_registered()
    for name in registry.list_models():
        entry = registry.get_entry(name)
        assert _model_arguments(name) == registry.model_arguments(entry.builder), name


def test_method_params_defaults_agree_with_constructors() -> None:
    """Method hyper-parameters are declared in kerasdl.methods.params (pydantic, no TensorFlow);
    the constructor keys there must be constructor arguments with the same defaults."""
    from kerasdl.methods import METHODS

    for name, entry in METHODS.items():
        params = inspect.signature(entry.cls.__init__).parameters
        defaults = entry.params(name=name).method_kwargs()
        for key, value in defaults.items():
            assert key in params, f"{name}: {key} is not an argument of {entry.cls.__name__}"
            default = params[key].default
            if default is not inspect.Parameter.empty:
                if isinstance(default, tuple):
                    value = tuple(value)
                assert value == default, f"{name}.{key}: params {value!r}, constructor {default!r}"


def test_import_kerasdl_keeps_create_model() -> None:
    assert kerasdl.create_model is registry.create_model
    assert kerasdl.list_models is registry.list_models
    assert "create_model" in dir(kerasdl)
    with pytest.raises(AttributeError):
        kerasdl.no_such_name  # noqa: B018
