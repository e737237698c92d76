"""SavedModel export with TF-Serving signatures (see :mod:`kerasdl.export.saved_model`)."""

from kerasdl.export.layout import atomic_version_dir, list_versions, next_version
from kerasdl.export.saved_model import (
    BYTES_INPUT,
    BYTES_SIGNATURE,
    DEFAULT_SIGNATURE,
    IMAGES_INPUT,
    build_archive,
    export_run,
    export_saved_model,
)
from kerasdl.export.source import ExportSource, resolve_source

__all__ = [
    "BYTES_INPUT",
    "BYTES_SIGNATURE",
    "DEFAULT_SIGNATURE",
    "IMAGES_INPUT",
    "ExportSource",
    "atomic_version_dir",
    "build_archive",
    "export_run",
    "export_saved_model",
    "list_versions",
    "next_version",
    "resolve_source",
]
