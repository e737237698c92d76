"""What a recipe's ``model:`` section may say, without importing Keras.

The registry manifest (``kerasdl/registry_manifest.json``, package data generated from the registry
by ``python -m kerasdl.registry``) lists every registered model and its constructor arguments, so
that the schema checks ``model:`` in a process that has not loaded a single model family.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_MANIFEST: dict[str, Any] | None = None


def _manifest() -> dict[str, Any]:
    """The registry manifest shipped with the package ({} if missing, unreadable or stale)."""
    global _MANIFEST
    if _MANIFEST is None:
        from kerasdl import registry

        try:
            data = json.loads(Path(registry.__file__).with_name(registry.MANIFEST_NAME).read_text())
            _MANIFEST = data["models"] if data.get("version") == 2 else {}
        except (OSError, ValueError, KeyError, AttributeError):
            _MANIFEST = {}
    return _MANIFEST


def accepted_arguments(name: str) -> list[str]:
    """The keyword arguments registry model ``name`` accepts (``registry.model_arguments``).

    Read from the registry manifest (no Keras import); a model registered at run time by the
    user's own code is read from the registry, and without a manifest the registry is loaded
    (exact, but it imports every model family).

    Raises:
        ValueError: an unknown name, naming the registered ones.
    """
    from kerasdl import registry

    live = registry._REGISTRY.get(name)
    if live is not None:
        return registry.model_arguments(live.builder)
    manifest = {} if registry._loaded else _manifest()  # loaded: the registry is the whole truth
    if name in manifest:
        return list(manifest[name]["args"])
    if not manifest and not registry._loaded:
        registry.ensure_registered()
        return accepted_arguments(name)
    names = sorted({*manifest, *registry._REGISTRY})
    raise ValueError(f"model.name: Unknown model {name!r}. Expected one of: {', '.join(names)}.")
