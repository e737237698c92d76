"""Refuse SavedModels whose graphs can touch files, processes or the network, without running them.

A SavedModel is a program: ``tf.saved_model.load`` runs some of its functions (variable restore,
resource creation and initialisation) and serving runs its signatures. A ``WriteFile`` in either
writes a file on the server. :func:`check_saved_model` parses ``saved_model.pb`` (never executing
it), walks every graph node and library function that loading or serving can run, and refuses the
version when one of them is an op of :data:`~kerasdl.serving.unsafe_ops.DENIED_OPS` (``kerasdl
serve --allow-unsafe-ops`` loads it anyway).

What is walked (transitively through function-call ops and every function-valued attribute:
``If``/``While`` branches, dataset map functions, ``XlaCallModule``'s function list, ...):

* the serving signatures: the object graph's ``signatures`` (what ``tf.saved_model.load`` serves)
  and the ``signature_def`` tensors (what TF Serving runs);
* what ``tf.saved_model.load`` runs: every resource's ``_create_resource`` / ``_initialize`` /
  ``_destroy_resource`` function, every object's checkpoint save and restore functions, and for
  TF1-style SavedModels the ``saver_def`` restore op, the init op (``__saved_model_init_op``,
  ``saved_model_main_op``, ``legacy_init_op``), table initialisers and local-variable
  initialisers (TF Serving's C++ loader runs the same).

Every node of a reached function is checked (a function runs as a whole); graph nodes are checked
when a root's output depends on them. Functions nothing runs (the checkpoint *save* function, a
``tf.function`` attribute no signature calls) are not.

Allowed where they are legitimate (decided statically from the graph):

* ``RestoreV2`` (and the older restore ops) in the saver's restore path when its prefix is the
  saver's filename tensor (the loader feeds the version's ``variables/variables``);
* ``ReadFile`` and ``InitializeTableFromTextFile[V2]`` (vocabulary files) when the filename is an
  asset of this version resolving inside its ``assets/`` folder (symlinks resolved);
* ``CacheDataset`` with the empty (in-memory) filename, ``PrintV2`` to stderr/stdout/the log,
  ``DecodeProtoV2``/``EncodeProto`` with ``local://`` or ``bytes://`` descriptors, ``Copy`` without
  a debug spec, ``FixedUnigramCandidateSampler`` without a vocabulary file.

Also refused: op types this TensorFlow does not register (custom-op libraries: their ops cannot be
vetted) and calls of functions the SavedModel does not define (they would resolve to functions of
the server process).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kerasdl.serving.graph_walk import Finding, GraphWalker
from kerasdl.serving.unsafe_ops import DENIED_OP_PREFIXES, DENIED_OPS, Rule

log = logging.getLogger("kerasdl.serving")

FLAG = "--allow-unsafe-ops"
PERMISSION_DENIED = 7  # tensorflow.core.protobuf.error_codes_pb2.PERMISSION_DENIED


@dataclass
class SafetyReport:
    """The result of :func:`scan_saved_model`.

    Attributes:
        path: the version folder.
        findings: the refused ops (empty: safe).
        op_types: every op type reached.
        functions: how many library functions were walked.
        seconds: how long the scan took (parse included).
    """

    path: Path
    findings: list[Finding] = field(default_factory=list)
    op_types: set[str] = field(default_factory=set)
    functions: int = 0
    seconds: float = 0.0
    file_stat: tuple = ()

    @property
    def safe(self) -> bool:
        return not self.findings

    def summary(self, limit: int = 4, calls: bool = False) -> str:
        """The findings on one line, the first ``limit`` in full."""
        parts = [f.describe(calls) for f in self.findings[:limit]]
        more = len(self.findings) - limit
        if more > 0:
            parts.append(f"and {more} more")
        return "; ".join(parts)

    def unchanged(self) -> bool:
        """The scanned model file is still the one on disk (size, times, inode)."""
        return _stat(self.path)[1] == self.file_stat


class SafetyCheckError(ValueError):
    """The graph is malformed in a way the walk cannot follow."""


class UnsafeModelError(Exception):
    """A version refused because its graph can touch files, processes or the network.

    Its ``error_code`` is TF's PERMISSION_DENIED; it is not retried until the files change.
    """

    error_code = PERMISSION_DENIED
    retryable = False

    def __init__(self, report: SafetyReport, problem: str = "") -> None:
        self.report = report
        ops = sorted({f.op for f in report.findings})
        problem = problem or (
            f"the graph can run ops that touch files, processes or the network "
            f"({', '.join(ops)}): {report.summary()}"
        )
        super().__init__(f"Refused (start the server with {FLAG} to load it anyway): {problem}")


def add_safety_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--allow-unsafe-ops`` (``args.allow_unsafe_ops``) to ``kerasdl serve``'s parser."""
    parser.add_argument(
        FLAG,
        action="store_true",
        help="load model versions whose graphs can touch files, processes or the network "
        "(WriteFile, ReadFile outside the version's assets, TFRecordDataset, PyFunc, ...); by "
        "default such versions are refused (docs/serving.md, Security)",
    )


def check_saved_model(path: str | Path, allow_unsafe_ops: bool = False) -> SafetyReport:
    """Scan a SavedModel version and refuse it when it can reach a denied op.

    Args:
        path: the version folder (holding ``saved_model.pb``).
        allow_unsafe_ops: log the findings instead of refusing.

    Returns:
        The scan's report.

    Raises:
        UnsafeModelError: a denied op is reachable, or the graph cannot be checked, and
            ``allow_unsafe_ops`` is false.
        OSError: the model file is missing or cannot be parsed (as ``tf.saved_model.load``).

    Example:
        >>> check_saved_model("saved_models/digits/1").seconds
        0.004
    """
    try:
        report = scan_saved_model(path)
    except SafetyCheckError as err:  # a graph the walk cannot follow: refuse it, or load it
        report = SafetyReport(Path(path), file_stat=_stat(Path(path))[1])
        if not allow_unsafe_ops:
            raise UnsafeModelError(report, str(err)) from err
        log.warning("%s: loading unchecked (%s): %s", path, FLAG, err)
        return report
    if report.findings:
        if not allow_unsafe_ops:
            raise UnsafeModelError(report)
        log.warning(
            "%s: loading despite unsafe ops (%s): %s", report.path, FLAG, report.summary(100, True)
        )
    return report


def scan_saved_model(path: str | Path) -> SafetyReport:
    """Parse ``saved_model.pb`` (or ``.pbtxt``) and list the denied ops loading or serving reach."""
    started = time.perf_counter()
    path = Path(path)
    model_file, file_stat = _stat(path)
    saved_model = _parse(model_file)
    walker = GraphWalker(path)
    try:
        for meta_graph in saved_model.meta_graphs:
            walker.scan(meta_graph)
    except Exception as err:  # noqa: BLE001 - a malformed graph: report it in one line
        raise SafetyCheckError(f"cannot check the graph ({type(err).__name__}: {err})") from err
    report = SafetyReport(path, walker.findings, walker.op_types, walker.functions_walked)
    report.file_stat = file_stat
    report.seconds = time.perf_counter() - started
    return report


def _stat(path: Path) -> tuple[Path, tuple]:
    """The model file ``tf.saved_model.load`` reads (``.pb`` first) and its identity."""
    for name in ("saved_model.pb", "saved_model.pbtxt"):
        model_file = path / name
        try:
            st = os.stat(model_file)
        except FileNotFoundError:
            continue
        return model_file, (str(model_file), st.st_dev, st.st_ino, st.st_size,
                            st.st_mtime_ns, st.st_ctime_ns)  # fmt: skip
    raise OSError(f"SavedModel file does not exist at: {path}/{{saved_model.pbtxt|saved_model.pb}}")


def _parse(model_file: Path) -> Any:
    from google.protobuf import message, text_format
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    data = model_file.read_bytes()
    try:
        if model_file.suffix == ".pb":
            saved_model.ParseFromString(data)
        else:
            text_format.Parse(data.decode("utf-8"), saved_model)
    except (message.DecodeError, text_format.ParseError, UnicodeDecodeError) as err:
        raise OSError(f"Cannot parse file {model_file}: {err}.") from err
    return saved_model


__all__ = [
    "DENIED_OPS",
    "DENIED_OP_PREFIXES",
    "FLAG",
    "Finding",
    "Rule",
    "SafetyCheckError",
    "SafetyReport",
    "UnsafeModelError",
    "add_safety_arguments",
    "check_saved_model",
    "scan_saved_model",
]
