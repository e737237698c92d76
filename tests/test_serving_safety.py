"""The server refuses SavedModels that can touch files, processes or the network (issue 14).

Each crafted SavedModel below is a real attack: loaded with ``--allow-unsafe-ops`` it writes its
target file (at load time, or at the warm-up call of its signature) or reads a file outside the
version. Through the real repository, without the flag, each is refused with the op and function
named, the status shows ``END`` / ``PERMISSION_DENIED``, and the target file never appears.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest_serving import UvicornThread, call, exported, fresh_dir
from unsafe_models import (
    matching_files,
    read_passwd,
    secret,
    signature_model,
    tfrecord_reader,
    vocab_asset,
    vocab_outside,
    write_at_load,
    write_in_signature,
    write_in_tf1_init_op,
)

from kerasdl.serving.graph_walk import UNDEFINED  # noqa: E402
from kerasdl.serving.repository import ModelRepository  # noqa: E402
from kerasdl.serving.safety import (  # noqa: E402
    DENIED_OPS,
    UnsafeModelError,
    add_safety_arguments,
    check_saved_model,
    scan_saved_model,
)
from kerasdl.serving.servable import Servable, load_error_code  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _target(name: str) -> str:
    return str(fresh_dir(f"target-{name}") / "pwned.txt")


def _serve(model: Path, allow: bool = False, name: str = "m") -> tuple[ModelRepository, Path]:
    """``model`` as version 1 of a model folder, managed by the real repository (one pass)."""
    base = fresh_dir("base")
    shutil.copytree(model, base / name / "1", symlinks=True)
    repo = ModelRepository(
        base, poll_interval=0, max_load_retries=3, load_retry_interval=0.01, allow_unsafe_ops=allow
    )
    repo.poll_once()
    return repo, base / name / "1"


def _status(repo: ModelRepository, name: str = "m") -> dict:
    return repo.status(name)["model_version_status"][0]


# --- refused without the flag, served (and dangerous) with it --------------------------------

WRITES = {
    "signature": write_in_signature,
    "load time": write_at_load,
    "TF1 init op": write_in_tf1_init_op,
}


@pytest.mark.parametrize("where", sorted(WRITES))
def test_a_model_that_writes_a_file_is_refused_and_writes_nothing(where):
    target = _target(where.replace(" ", "-"))
    model = WRITES[where](target)

    repo, _ = _serve(model)
    status = _status(repo)
    message = status["status"]["error_message"]
    assert status["state"] == "END", status  # refused at once: no retries of a refusal
    assert status["status"]["error_code"] == "PERMISSION_DENIED"
    assert "WriteFile" in message and "--allow-unsafe-ops" in message, message
    assert re.search(r"in (function|graph node) \w+, reached from ", message), message
    assert f"of '{target}'" in message, message
    assert not os.path.exists(target)
    with pytest.raises(Exception, match="Servable not found"):
        repo.get("m")

    repo, _ = _serve(model, allow=True)  # the attack is real: allowed, it writes the file
    assert _status(repo)["state"] == "AVAILABLE"
    assert os.path.exists(target)


def test_the_refusal_names_the_load_time_function():
    target = _target("names")
    report = scan_saved_model(write_at_load(target))
    (finding,) = report.findings
    assert finding.op == "WriteFile" and finding.location.startswith("function __inference_")
    assert "load-time function root.evil._initialize" in finding.root
    report = scan_saved_model(write_in_signature(target))
    assert {f.root for f in report.findings} == {"signature 'serving_default'"}
    # the branch function of the tf.cond, not the signature wrapper, holds the op
    assert all("cond_true" in f.location for f in report.findings), report.summary()


def test_a_load_time_function_behind_a_call_attribute_is_found(tmp_path):
    """The resource's ``_initialize`` made an object whose ``__call__`` is the writing function:
    the loader calls it all the same, and the walk follows ``__call__``."""
    from tensorflow.core.protobuf import saved_model_pb2

    target = _target("call-attribute")
    model = tmp_path / "v"
    shutil.copytree(write_at_load(target), model)
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((model / "saved_model.pb").read_bytes())
    graph = proto.meta_graphs[0].object_graph_def
    (resource,) = [n for n in graph.nodes if n.WhichOneof("kind") == "resource"]
    (child,) = [c for c in resource.children if c.local_name == "_initialize"]
    wrapper = graph.nodes.add()
    wrapper.user_object.identifier = "_generic_user_object"
    wrapper.children.add(node_id=child.node_id, local_name="__call__")
    child.node_id = len(graph.nodes) - 1
    (model / "saved_model.pb").write_bytes(proto.SerializeToString())

    (finding,) = scan_saved_model(model).findings
    assert finding.op == "WriteFile" and "root.evil._initialize" in finding.root
    repo, _ = _serve(model)
    assert _status(repo)["status"]["error_code"] == "PERMISSION_DENIED"
    assert not os.path.exists(target)
    repo, _ = _serve(model, allow=True)  # the loader does run it
    assert _status(repo)["state"] == "AVAILABLE"
    assert os.path.exists(target)


READS = {  # op: (model, the path the message shows: the dataset's comes through flat_map)
    "ReadFile": (read_passwd, "of '/etc/passwd'"),
    "MatchingFiles": (matching_files, "of '/etc/*'"),
    "TFRecordDataset": (tfrecord_reader, "in function __inference_Dataset_flat_map"),
    "InitializeTableFromTextFileV2": (vocab_outside, "secret.txt' in function"),
}


@pytest.mark.parametrize("op", sorted(READS))
def test_a_model_that_reads_files_outside_the_version_is_refused(op):
    make, path_text = READS[op]
    repo, _ = _serve(make())
    status = _status(repo)
    message = status["status"]["error_message"]
    assert (status["state"], status["status"]["error_code"]) == ("END", "PERMISSION_DENIED")
    assert f"{op} (" in message and path_text in message and "in function " in message, message

    repo, _ = _serve(make(), allow=True)
    assert _status(repo)["state"] == "AVAILABLE", _status(repo)
    if op == "InitializeTableFromTextFileV2":  # allowed, the model did read the secret file
        out = repo.get("m").signature(None)({"words": np.array([b"beta"], dtype=object)})
        assert out["ids"].tolist() == [1]


def test_python_callbacks_are_refused():
    """``tf.py_function`` saves an ``EagerPyFunc`` naming a callback token: in the server, that
    token would call whatever Python function the process registered under it."""
    import tensorflow as tf

    model = signature_model(
        "py-function", lambda x: tf.py_function(lambda a: a * 2.0, [x], tf.float32)
    )
    repo, _ = _serve(model)
    status = _status(repo)
    assert status["status"]["error_code"] == "PERMISSION_DENIED"
    assert "EagerPyFunc (calls a Python function of the server process" in str(status)


def test_vocabulary_assets_inside_the_version_are_allowed_and_escapes_are_not(tmp_path):
    repo, version = _serve(vocab_asset())
    assert _status(repo)["state"] == "AVAILABLE", _status(repo)
    out = repo.get("m").signature(None)({"words": np.array([b"dog", b"eel"], dtype=object)})
    assert out["ids"].tolist() == [1, -1]

    # the same model with its asset swapped for a symlink out of the version
    escaped = tmp_path / "symlinked"
    shutil.copytree(vocab_asset(), escaped)
    (escaped / "assets" / "vocab.txt").unlink()
    (escaped / "assets" / "vocab.txt").symlink_to(secret())
    with pytest.raises(UnsafeModelError, match="outside the version's assets/") as err:
        check_saved_model(escaped)
    assert "InitializeTableFromTextFileV2" in str(err.value)

    # ... or with the asset's file name rewritten to climb out of assets/
    from tensorflow.core.protobuf import saved_model_pb2

    climbed = tmp_path / "climbed"
    shutil.copytree(vocab_asset(), climbed)
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((climbed / "saved_model.pb").read_bytes())
    proto.meta_graphs[0].asset_file_def[0].filename = os.path.relpath(secret(), climbed / "assets")
    (climbed / "saved_model.pb").write_bytes(proto.SerializeToString())
    report = scan_saved_model(climbed)
    assert [f.op for f in report.findings] == ["InitializeTableFromTextFileV2"] * len(
        report.findings
    )
    assert report.findings and "outside the version's assets/" in report.summary()


def test_kerasdl_exports_pass_and_load():
    """Both signatures (float images, and encoded images through tf.io.decode_image) are safe;
    the checkpoint restore (RestoreV2 in the saver's restore op) and the class-names asset too."""
    version = exported()
    report = check_saved_model(version)
    assert report.safe, report.summary()
    assert {"DecodeImage", "InitializeTableFromTextFileV2", "RestoreV2"} <= report.op_types
    servable = Servable("digits", 1, version)
    assert set(servable.signatures) == {"serving_default", "serving_bytes"}
    assert servable.safety.seconds < 1.0


@pytest.mark.slow
def test_registry_resnet50_export_passes_quickly():
    """A full-size registry model: the check is a small fraction of the load (~60 ms vs 6.6 s)."""
    import time

    import keras

    from kerasdl.data.preprocess import PreprocessSpec
    from kerasdl.export.saved_model import export_saved_model
    from kerasdl.registry import create_model

    keras.utils.set_random_seed(0)
    model = create_model("resnet50", num_classes=1000, input_shape=(224, 224, 3))
    spec = PreprocessSpec((224, 224), 3, [0.5] * 3, [0.25] * 3, [str(i) for i in range(1000)])
    version = export_saved_model(model, spec, fresh_dir("registry"), "resnet50")
    seconds = min(scan_saved_model(version).seconds for _ in range(3))
    assert seconds < 0.5, seconds
    repo = ModelRepository(version.parent.parent, poll_interval=0)
    started = time.monotonic()
    repo.poll_once()
    assert _status(repo, "resnet50")["state"] == "AVAILABLE", _status(repo, "resnet50")
    assert seconds < 0.1 * (time.monotonic() - started)
    assert set(repo.get("resnet50").signatures) == {"serving_default", "serving_bytes"}


# --- the refusal through HTTP, the error's shape, the flag, the deny-list ---------------------


def test_status_over_http_shows_the_refusal():
    pytest.importorskip("uvicorn")
    from kerasdl.serving.app import ServerConfig, create_app

    target = _target("http")
    repo, _ = _serve(write_in_signature(target), name="evil")
    with UvicornThread(create_app(repo, ServerConfig())) as server:
        port = server.port
        code, body = call(port, "GET", "/v1/models/evil")
        assert code == 200
        (status,) = body["model_version_status"]
        assert status["state"] == "END"
        assert status["status"]["error_code"] == "PERMISSION_DENIED"
        assert "WriteFile" in status["status"]["error_message"]
        code, body = call(port, "POST", "/v1/models/evil:predict", {"instances": [[0.0, 0.0]]})
        assert code == 404, body
        assert call(port, "GET", "/readyz")[0] == 503
    assert not os.path.exists(target)


def test_refusal_error_code_and_one_line_message():
    with pytest.raises(UnsafeModelError) as err:
        Servable("m", 1, read_passwd())
    assert load_error_code(err.value) == "PERMISSION_DENIED"
    assert err.value.retryable is False
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("Refused (start the server with --allow-unsafe-ops")


def test_allow_unsafe_ops_flag():
    parser = argparse.ArgumentParser()
    add_safety_arguments(parser)
    assert parser.parse_args([]).allow_unsafe_ops is False
    assert parser.parse_args(["--allow-unsafe-ops"]).allow_unsafe_ops is True


def test_deny_list_names_real_ops_and_is_documented():
    from tensorflow.python.framework import op_def_registry

    assert len(DENIED_OPS) >= 100
    assert [op for op in DENIED_OPS if op_def_registry.get(op) is None] == []
    assert all(rule.reason and rule.category for rule in DENIED_OPS.values())
    docs = (ROOT / "docs" / "serving.md").read_text()
    security = docs[docs.index("## Security") :]
    assert [op for op in DENIED_OPS if f"`{op}`" not in security] == []


def _edited(src: Path, dest: Path, edit) -> Path:
    from tensorflow.core.protobuf import saved_model_pb2

    shutil.copytree(src, dest)
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((dest / "saved_model.pb").read_bytes())
    for function in proto.meta_graphs[0].graph_def.library.function:
        for node in function.node_def:
            edit(node)
    (dest / "saved_model.pb").write_bytes(proto.SerializeToString())
    return dest


def test_unregistered_ops_and_undefined_functions_are_refused(tmp_path):
    """A custom op (not vetted, here a tensorflow-io name), an op this TensorFlow lacks, and a call
    of a function the model does not define (it would resolve to one of the server process)."""

    def rename_op(new):
        def edit(node):
            if node.op == "ReadFile":
                node.op = new

        return edit

    def call_elsewhere(node):
        if node.op in ("PartitionedCall", "StatefulPartitionedCall"):
            node.attr["f"].func.name = "__inference_of_another_model_1"

    for op, reason in [("IO>ReadFromSomewhere", "tensorflow-io"), ("NoSuchOp", "not registered")]:
        report = scan_saved_model(_edited(read_passwd(), tmp_path / op, rename_op(op)))
        assert [(f.op, reason in f.rule.reason) for f in report.findings] == [(op, True)]
    report = scan_saved_model(_edited(read_passwd(), tmp_path / "call", call_elsewhere))
    assert [(f.op, f.rule) for f in report.findings] == [
        ("__inference_of_another_model_1", UNDEFINED)
    ]


def test_gradients_duplicates_and_malformed_graphs(tmp_path):
    """A function's registered gradient (what ``SymbolicGradient`` runs) is walked; a function
    defined twice, differently, is refused; a graph the walk cannot follow is refused unless
    allowed."""
    from tensorflow.core.protobuf import saved_model_pb2

    def load(path):
        proto = saved_model_pb2.SavedModel()
        proto.ParseFromString((path / "saved_model.pb").read_bytes())
        return proto

    writer = load(write_in_signature(_target("gradient")))
    (writes,) = [
        f
        for f in writer.meta_graphs[0].graph_def.library.function
        if any(n.op == "WriteFile" for n in f.node_def)
    ]
    safe = signature_model("safe", lambda x: x * 2.0)
    assert scan_saved_model(safe).safe

    for case in ("gradient", "twice", "malformed"):
        model = tmp_path / case
        shutil.copytree(safe, model)
        proto = load(model)
        library = proto.meta_graphs[0].graph_def.library
        serve = next(f.signature.name for f in library.function if "serve" in f.signature.name)
        if case == "gradient":
            library.function.add().CopyFrom(writes)
            library.gradient.add(function_name=serve, gradient_func=writes.signature.name)
        elif case == "twice":
            twin = library.function.add()
            twin.CopyFrom(writes)
            twin.signature.name = serve
        else:
            graph = proto.meta_graphs[0].object_graph_def
            next(c for c in graph.nodes[0].children if c.local_name == "signatures").node_id = 999
        (model / "saved_model.pb").write_bytes(proto.SerializeToString())
        if case == "malformed":
            with pytest.raises(UnsafeModelError, match="cannot check the graph .IndexError"):
                check_saved_model(model)
            assert check_saved_model(model, allow_unsafe_ops=True).findings == []
            continue
        ops = {f.op for f in scan_saved_model(model).findings}
        assert ops == ({"WriteFile"} if case == "gradient" else {serve, "WriteFile"}), ops


def test_unreadable_model_file_is_an_ordinary_retryable_error(tmp_path):
    (tmp_path / "saved_model.pb").write_bytes(b"\xff not a proto")
    with pytest.raises(OSError, match="Cannot parse file"):
        scan_saved_model(tmp_path)
    with pytest.raises(OSError, match="does not exist"):
        scan_saved_model(tmp_path / "missing")
