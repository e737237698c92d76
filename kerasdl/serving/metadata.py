"""TF Serving's model metadata: the SavedModel's own signature defs, as TF Serving prints them.

TF Serving answers ``GET /v1/models/NAME[/versions/N]/metadata`` with the ``signature_def`` map of
the loaded MetaGraphDef (tag ``serve``), including ``__saved_model_init_op``, printed by
protobuf's JSON printer with the proto field names and every field (``get_model_metadata_impl.cc``,
``http_rest_api_util.cc``). The tensor names are the graph's own (``serving_default_images:0``,
``StatefulPartitionedCall:1``), which a client may need for TF1-style session calls, so they are
read from ``saved_model.pb`` rather than made up. The result is cached per loaded version.
"""

from __future__ import annotations

import logging
import weakref
from pathlib import Path
from typing import Any

log = logging.getLogger("kerasdl.serving")

SERVE_TAG = "serve"
_CACHE: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def _message_to_dict(message: Any) -> dict[str, Any]:
    from google.protobuf import json_format

    try:
        return json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
    except TypeError:  # protobuf < 5.26 names the option differently
        return json_format.MessageToDict(
            message, preserving_proto_field_name=True, including_default_value_fields=True
        )


def signature_defs(version_dir: str | Path) -> dict[str, Any]:
    """The ``serve`` MetaGraphDef's signature defs of a SavedModel folder, as TF Serving's JSON.

    Raises:
        OSError, ValueError: the folder has no readable ``saved_model.pb`` / ``.pbtxt``.
    """
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    folder = Path(version_dir)
    proto = saved_model_pb2.SavedModel()
    binary = folder / "saved_model.pb"
    if binary.is_file():
        proto.ParseFromString(binary.read_bytes())
    else:
        text_format.Parse((folder / "saved_model.pbtxt").read_text(), proto)
    graphs = [g for g in proto.meta_graphs if SERVE_TAG in g.meta_info_def.tags]
    if not graphs:
        raise ValueError(f"{folder} has no MetaGraphDef tagged '{SERVE_TAG}'")
    return {k: _message_to_dict(v) for k, v in sorted(graphs[0].signature_def.items())}


def model_metadata(servable: Any) -> dict[str, Any]:
    """TF Serving's ``GET .../metadata`` body for a loaded servable (cached per servable).

    Falls back to the servable's own description when its folder can no longer be read (a
    version deleted while it is still being served).
    """
    cached = _CACHE.get(servable)
    if cached is not None:
        return cached
    try:
        sigs = signature_defs(servable.path)
    except (OSError, ValueError) as err:
        log.warning(
            "metadata of model %s version %d from the loaded signatures (%s)",
            servable.name,
            servable.version,
            err,
        )
        return servable.metadata()
    body = {
        "model_spec": {
            "name": servable.name,
            "signature_name": "",
            "version": str(servable.version),
        },
        "metadata": {"signature_def": {"signature_def": sigs}},
    }
    _CACHE[servable] = body
    return body
