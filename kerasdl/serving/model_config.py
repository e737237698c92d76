"""TF Serving's model config file (``--model-config-file``), read with TF Serving's own proto.

The file is a ``ModelServerConfig`` in protobuf text format, parsed with ``text_format`` into
``tensorflow_serving.config.model_server_config_pb2`` (from the ``tensorflow-serving-api``
package), so a file written for TF Serving works unchanged::

    model_config_list {
      config {
        name: "digits"
        base_path: "/models/digits"
        model_platform: "tensorflow"
        model_version_policy { specific { versions: 1 versions: 2 } }
        version_labels { key: "stable" value: 1 }
        version_labels { key: "canary" value: 2 }
      }
      config { name: "other" base_path: "other" }   # relative: to the config file's folder
    }

Differences from TF Serving, all more lenient: a relative ``base_path`` is taken relative to the
config file's folder (TF Serving wants absolute paths), an empty ``model_platform`` means
``tensorflow``, and a label may name a version that is not loaded yet (see
:class:`kerasdl.serving.repository.ModelRepository` for how labels move). An empty
``specific {}`` policy is an error here (TF Serving only warns and serves nothing).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kerasdl.errors import UserError
from kerasdl.serving.version_policy import VersionPolicy

_NAME = re.compile(r"^[^/:\s]+$")  # what TF Serving's URL grammar accepts as a model name


class ModelConfigError(UserError):
    """A model config file that cannot be read, parsed or validated (one line, names the key)."""


@dataclass(frozen=True)
class ModelSpec:
    """One served model: where its versions live, which to serve, and its version labels.

    Args:
        name: the model name in request URLs.
        base_path: the folder holding integer-named version folders.
        policy: which versions to serve.
        labels: version labels (``{"stable": 1}``), served at ``/v1/models/NAME/labels/LABEL``.
    """

    name: str
    base_path: Path
    policy: VersionPolicy = VersionPolicy()
    labels: Mapping[str, int] = field(default_factory=dict)


def parse_model_config(
    text: str, root: str | Path = ".", source: str = "config"
) -> list[ModelSpec]:
    """Parse a ``ModelServerConfig`` text proto into model specs.

    Args:
        text: the file's text.
        root: the folder relative ``base_path`` values are taken from.
        source: the file name, for error messages.

    Raises:
        ModelConfigError: a parse error (with line and column) or an invalid entry.
    """
    try:
        from google.protobuf import text_format
        from tensorflow_serving.config import model_server_config_pb2
    except ImportError as err:
        raise ModelConfigError(
            f"Reading {source} needs TF Serving's protos ({err}): "
            "pip install tensorflow-serving-api"
        ) from err
    try:
        msg = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    except text_format.ParseError as err:
        raise ModelConfigError(f"{source}: not a ModelServerConfig text proto: {err}") from err
    which = msg.WhichOneof("config")
    if which == "custom_model_config":
        raise ModelConfigError(
            f"{source}: custom_model_config is not supported; use model_config_list"
        )
    specs: list[ModelSpec] = []
    seen: set[str] = set()
    for i, conf in enumerate(msg.model_config_list.config):
        where = f"{source}: model_config_list.config[{i}]"
        if not _NAME.match(conf.name):
            raise ModelConfigError(
                f"{where}: expected a non-empty name without '/', ':' or spaces. "
                f"Received: {conf.name!r}"
            )
        where = f"{source}: model '{conf.name}'"
        if conf.name in seen:
            raise ModelConfigError(f"{where} is listed more than once")
        seen.add(conf.name)
        if not conf.base_path:
            raise ModelConfigError(f"{where}: expected a base_path")
        if conf.model_platform not in ("", "tensorflow"):
            raise ModelConfigError(
                f"{where}: expected model_platform 'tensorflow'. Received: {conf.model_platform!r}"
            )
        policy = _policy(conf.model_version_policy, where)
        labels = dict(sorted(conf.version_labels.items()))
        for label, version in labels.items():
            if not _NAME.match(label) or version < 0:
                raise ModelConfigError(
                    f"{where}: expected version_labels of a non-empty name and a version >= 0. "
                    f"Received: {label!r}: {version}"
                )
            if policy.kind == "specific" and version not in policy.versions:
                raise ModelConfigError(
                    f"{where}: label '{label}' names version {version}, which its version policy "
                    f"({policy.describe()}) never serves"
                )
        base = Path(conf.base_path).expanduser()
        if not base.is_absolute():
            base = Path(root) / base
        specs.append(ModelSpec(conf.name, base, policy, labels))
    return specs


def _policy(msg: object, where: str) -> VersionPolicy:
    kind = msg.WhichOneof("policy_choice")  # type: ignore[attr-defined]
    if kind is None or kind == "latest":
        return VersionPolicy("latest", max(int(msg.latest.num_versions), 1))  # type: ignore[attr-defined]
    if kind == "all":
        return VersionPolicy("all")
    versions = tuple(sorted({int(v) for v in msg.specific.versions}))  # type: ignore[attr-defined]
    if not versions:
        raise ModelConfigError(
            f"{where}: expected at least one version in specific {{ versions: N }}"
        )
    return VersionPolicy("specific", versions=versions)


def load_model_config(path: str | Path) -> list[ModelSpec]:
    """Read and parse a model config file (relative base paths: from the file's folder)."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ModelConfigError(f"Cannot read model config file {path}: {err}") from err
    return parse_model_config(text, path.resolve().parent, str(path))
