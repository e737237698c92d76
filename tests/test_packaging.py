"""The package works when installed from a wheel: its data files (the default recipe, the registry
manifest, the model count table) are inside it, and the default recipe resolves inside the package,
not in a source checkout's ``configs/``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from kerasdl import config

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "kerasdl"
DATA_FILES = (
    "kerasdl/recipes/quickstart.yaml",
    "kerasdl/registry_manifest.json",
    "kerasdl/commands/models_table.json",
)


def test_packaged_quickstart_is_the_configs_one() -> None:
    assert config.QUICKSTART == PACKAGE / "recipes" / "quickstart.yaml"
    assert config.QUICKSTART.read_bytes() == (REPO / "configs" / "quickstart.yaml").read_bytes(), (
        "kerasdl/recipes/quickstart.yaml and configs/quickstart.yaml differ: edit both"
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the sources (the build leaves nothing in the checkout)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(PACKAGE, src / "kerasdl", ignore=shutil.ignore_patterns("__pycache__"))
    cmd = [sys.executable, "-m", "pip", "wheel", str(src), "-w", str(tmp / "dist")]
    cmd += ["--no-deps", "--no-build-isolation", "--quiet"]  # offline: the installed setuptools
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (built,) = (tmp / "dist").glob("kerasdl-*.whl")
    return built


def test_wheel_holds_every_data_file(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(DATA_FILES) <= names
    # Every non-Python file of the package is shipped (a new data file needs package_data).
    data = {
        p.relative_to(REPO).as_posix()
        for p in PACKAGE.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    }
    assert data <= names, f"missing from the wheel (setup.cfg package_data): {data - names}"


def test_installed_wheel_finds_its_default_recipe(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # what pip install puts in site-packages
    script = (
        "import sys, kerasdl.config as c\n"
        "print(c.QUICKSTART)\n"
        "cfg = c.load_recipe()\n"
        "print(cfg.run.name, 'tensorflow' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,  # no configs/ here or above
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    path, loaded = proc.stdout.splitlines()
    assert Path(path) == site / "kerasdl" / "recipes" / "quickstart.yaml"
    assert loaded == "quickstart False"  # the default recipe loads, without TensorFlow
