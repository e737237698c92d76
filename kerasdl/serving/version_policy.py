"""Which versions of a model to serve, and in which order to load and unload them.

Two decisions, both TF Serving's:

* :class:`VersionPolicy` -- its ``model_version_policy`` (``latest {num_versions}``, ``all {}``,
  ``specific {versions}``; ``file_system_storage_path_source.cc``) picks the *aspired* versions
  among the version folders on disk. kerasdl adds one thing: under ``latest N``, a version whose
  load failed does not count towards N, so the next lower version is aspired too and keeps (or
  starts) serving while the newest one is retried.
* :func:`next_action` -- its ``AvailabilityPreservingPolicy``: unload a version that is no longer
  aspired only once an aspired version is serving (or when nothing is aspired at all), and
  otherwise load the highest aspired version first. A version change therefore never leaves a
  model without a serving version.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"
STATES = (START, LOADING, AVAILABLE, UNLOADING, END)
POLICY_KINDS = ("latest", "all", "specific")


@dataclass(frozen=True)
class VersionPolicy:
    """A model's version policy.

    Args:
        kind: ``"latest"`` (the ``num_versions`` highest versions), ``"all"`` or ``"specific"``
            (exactly ``versions``).
        num_versions: how many versions ``latest`` serves (TF Serving treats 0 as 1).
        versions: the versions ``specific`` serves.

    Example:
        >>> VersionPolicy("latest", 1).aspired([1, 2, 3])
        {3}
        >>> VersionPolicy("latest", 1).aspired([1, 2, 3], failed={3})
        {2, 3}
    """

    kind: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in POLICY_KINDS:
            raise ValueError(f"Expected a version policy in {POLICY_KINDS}. Received: {self.kind}")

    def aspired(self, on_disk: Iterable[int], failed: Iterable[int] = ()) -> set[int]:
        """The versions to serve among ``on_disk``; ``failed`` ones do not count for ``latest``."""
        disk = sorted(set(on_disk), reverse=True)
        if self.kind == "all":
            return set(disk)
        if self.kind == "specific":
            return set(disk) & set(self.versions)
        failed = set(failed)
        out: set[int] = set()
        good = 0
        for version in disk:
            if good >= max(self.num_versions, 1):
                break
            out.add(version)
            good += version not in failed
        return out

    def describe(self) -> str:
        """TF Serving's text for the policy, e.g. ``latest { num_versions: 1 }``."""
        if self.kind == "latest":
            return f"latest {{ num_versions: {max(self.num_versions, 1)} }}"
        if self.kind == "all":
            return "all {}"
        return "specific { " + " ".join(f"versions: {v}" for v in self.versions) + " }"


@dataclass
class VersionState:
    """One version's TF Serving status: state, canonical error code and message."""

    version: int
    state: str
    error: str = ""
    error_code: str = "OK"

    def to_json(self) -> dict[str, Any]:
        return {
            "version": str(self.version),
            "state": self.state,
            "status": {"error_code": self.error_code, "error_message": self.error},
        }


@dataclass(frozen=True)
class VersionSnapshot:
    """What :func:`next_action` needs to know about one version.

    Args:
        version: the version number.
        state: one of :data:`STATES`.
        aspired: whether the version policy (or a version label being moved) wants it served.
        loadable: whether a load may start now (never tried, or a failed load's retry is due).
    """

    version: int
    state: str
    aspired: bool
    loadable: bool = False


def next_action(versions: Sequence[VersionSnapshot]) -> tuple[str, int] | None:
    """TF Serving's ``AvailabilityPreservingPolicy``: ``("unload", v)``, ``("load", v)`` or None.

    The lowest un-aspired serving version is unloaded when nothing is aspired, when an aspired
    version is serving, or when more than one un-aspired version serves; otherwise the highest
    loadable aspired version is loaded.
    """
    has_aspired = any(v.aspired for v in versions)
    has_aspired_serving = any(v.aspired and v.state == AVAILABLE for v in versions)
    unaspired_serving = sorted(
        v.version for v in versions if not v.aspired and v.state == AVAILABLE
    )
    if unaspired_serving and (not has_aspired or has_aspired_serving or len(unaspired_serving) > 1):
        return ("unload", unaspired_serving[0])
    loadable = [v.version for v in versions if v.aspired and v.loadable]
    if loadable:
        return ("load", max(loadable))
    return None
