"""``kerasdl.io``: every writer replaces the file whole, and a failed write leaves the old file and
no temporary file behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from kerasdl import io
from kerasdl.runfolder import RunFolder


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if io.TMP_MARK in p.name)


def test_text_bytes_json_yaml_round_trip(tmp_path: Path) -> None:
    io.write_text(tmp_path / "a.txt", "héllo\n")
    io.write_bytes(tmp_path / "b.bin", b"\x00\x01")
    io.write_json(tmp_path / "c.json", {"b": 1, "a": [1, 2]}, sort_keys=True)
    io.write_yaml(tmp_path / "d.yaml", {"z": 1, "a": {"b": [1, 2]}})
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "c.json").read_text() == json.dumps({"a": [1, 2], "b": 1}, indent=2)
    text = (tmp_path / "d.yaml").read_text()
    assert yaml.safe_load(text) == {"z": 1, "a": {"b": [1, 2]}} and text.startswith("z:")
    assert _leftovers(tmp_path) == []


def test_replaces_an_existing_file_and_keeps_permissions_of_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text("old")
    io.write_json(path, {"new": True}, end="\n")
    assert path.read_text() == '{\n  "new": true\n}\n'
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


class _Boom(RuntimeError):
    pass


def test_failure_mid_write_leaves_old_file_and_no_temporary(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "metrics.json"
    path.write_text('{"old": 1}')

    def fsync(fd):  # the new content is in the temporary file when the disk fails
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(io.os, "fsync", fsync)
        with pytest.raises(OSError, match="No space"):
            io.write_json(path, {"new": 1})
        with pytest.raises(OSError, match="No space"):
            io.write_text(path, "new")
    with pytest.raises(_Boom), io.atomic_path(path) as tmp:
        tmp.write_text('{"half": ')  # part of the new file is on disk, then the failure
        raise _Boom("mid-write")
    assert path.read_text() == '{"old": 1}'
    assert _leftovers(tmp_path) == []


def test_temporary_names_are_hidden_and_found_by_the_run_folder_clean_up(tmp_path: Path) -> None:
    seen = []
    with io.atomic_path(tmp_path / "metrics.json") as tmp:
        seen.append(tmp)
        tmp.write_text("{}")
    name = seen[0].name
    assert name.startswith(".metrics.json.") and io.TMP_MARK in name
    assert seen[0].parent == tmp_path
    left = tmp_path / io.temporary_name(tmp_path / "best.keras", ".keras").name
    left.write_bytes(b"half")  # what a process killed mid-write leaves
    assert RunFolder(tmp_path).remove_partial_files() == [left.name]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_copy_file(tmp_path: Path) -> None:
    (tmp_path / "src").write_bytes(b"abc")
    (tmp_path / "dst").write_bytes(b"old")
    io.copy_file(tmp_path / "src", tmp_path / "dst")
    assert (tmp_path / "dst").read_bytes() == b"abc"
    with pytest.raises(FileNotFoundError):
        io.copy_file(tmp_path / "missing", tmp_path / "dst")
    assert (tmp_path / "dst").read_bytes() == b"abc"
    assert _leftovers(tmp_path) == []


def test_save_figure_keeps_format_and_closes(tmp_path: Path) -> None:
    from kerasdl.plotting import pyplot

    plt = pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    io.save_figure(fig, tmp_path / "f.svg", dpi=50)
    assert (tmp_path / "f.svg").read_text().lstrip().startswith("<?xml")
    assert not plt.fignum_exists(fig.number)
    fig, _ = plt.subplots()
    io.save_figure(fig, tmp_path / "g.png", dpi=50)
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"

    def broken(path, **kwargs):
        Path(path).write_bytes(b"\x89PNG half")
        raise _Boom("disk full")

    fig, _ = plt.subplots()
    fig.savefig = broken
    (tmp_path / "h.png").write_bytes(b"old")
    with pytest.raises(_Boom):
        io.save_figure(fig, tmp_path / "h.png")
    assert not plt.fignum_exists(fig.number)  # closed even when the save failed
    assert (tmp_path / "h.png").read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_save_model_keras_and_weights(tmp_path: Path) -> None:
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    io.save_model(model, tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(again.get_weights()[0], model.get_weights()[0])
    io.save_model(model, tmp_path / "m.weights.h5")
    model.load_weights(tmp_path / "m.weights.h5")
    with pytest.raises(ValueError):
        io.save_model(model, tmp_path / "m.txt")  # Keras refuses the extension: nothing left
    assert _leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras", "m.weights.h5"]
