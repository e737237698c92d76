"""Reading recipes: YAML files, dotted ``--set`` overrides and validation, in one line on error.

:func:`load_recipe` is the one entry point of a training recipe (:func:`load_run_recipe` that of a
trained model's); :func:`read_yaml` and :func:`apply_override` serve the other recipes too (the
search recipe, ``--resume`` checks). Every problem is a :class:`~kerasdl.errors.UserError` with
one line: YAML errors name the line and column, schema errors the key
(:mod:`kerasdl.config.errors`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from kerasdl.config.errors import one_line
from kerasdl.config.schema import RecipeConfig
from kerasdl.errors import UserError
from kerasdl.runfolder import RunFolder

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # kerasdl/
CONFIGS_DIR = PACKAGE_ROOT.parent / "configs"  # the recipes of a source checkout
# The default recipe ships inside the package (a wheel has no configs/); configs/quickstart.yaml is
# the same file, for users to read and copy (tests/test_packaging.py keeps the two identical).
QUICKSTART = PACKAGE_ROOT / "recipes" / "quickstart.yaml"


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``key.sub=value`` override to a raw recipe dict (value parsed as YAML)."""
    if "=" not in assignment:
        raise UserError(f"--set {assignment!r}: expected key.sub=value")
    key, raw = assignment.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise UserError(f"--set {assignment!r}: expected key.sub=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise UserError(f"--set {key}: cannot parse value {raw!r}{_yaml_where(err)}") from None
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise UserError(f"--set {key}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def validate_recipe(data: dict[str, Any]) -> RecipeConfig:
    """Validate a raw recipe dict; raise :class:`UserError` with one line on the first problem."""
    if not isinstance(data, dict):
        raise UserError(f"A recipe must be a mapping of sections. Received: {type(data).__name__}")
    try:
        return RecipeConfig.model_validate(data)
    except ValidationError as err:
        raise UserError(one_line(err, model=RecipeConfig)) from None


def _yaml_where(err: yaml.YAMLError) -> str:
    """Where and what a YAML error is, in one line with 1-based line numbers.

    PyYAML's marks are 0-based. An unclosed bracket or quote is only noticed where the next
    token (or the end of the file) is: then the construct's start (``context_mark``) is named
    too, and at the end of the file it is the only place named.
    """
    problem = " ".join(str(getattr(err, "problem", None) or err).split())
    mark = getattr(err, "problem_mark", None)
    context = getattr(err, "context", None)
    cmark = getattr(err, "context_mark", None)
    if mark is None:
        return f": {problem}"
    if cmark is not None and ("<stream end>" in problem or "end of stream" in problem):
        mark, cmark = cmark, None
    where = f" at line {mark.line + 1}, column {mark.column + 1}: {problem}"
    if context and cmark is not None and cmark.line != mark.line:
        where += f" ({context} started at line {cmark.line + 1}, column {cmark.column + 1})"
    elif context:
        where += f" ({context})"
    return where


class _RecipeLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last
    silently, so a recipe's second ``epochs:`` would quietly win over the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *anchor' merges, as PyYAML does
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.setdefault(key, key_node.start_mark.line)
            except TypeError:  # an unhashable key: PyYAML's own error follows
                continue
            if first != key_node.start_mark.line:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} given twice (first at line {first + 1})",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a recipe file, with clear errors for a missing file, bad YAML or a repeated key."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{path}: is a folder; expected a recipe file (.yaml)")
    if not p.is_file():
        raise UserError(f"Recipe file not found: {path}")
    try:
        text = p.read_bytes().decode("utf-8-sig")  # UTF-8 whatever the locale; a BOM is allowed
    except UnicodeDecodeError as err:
        raise UserError(
            f"{path}: not a YAML text file (not UTF-8: byte {err.object[err.start]:#04x} at "
            f"offset {err.start})"
        ) from None
    except OSError as err:
        raise UserError(f"{path}: cannot read the recipe: {err.strerror or err}") from None
    try:
        data = yaml.load(text, Loader=_RecipeLoader) or {}  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML{_yaml_where(err)}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a recipe must be a mapping of sections")
    return data


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None) -> RecipeConfig:
    """Read, override and validate a recipe.

    Args:
        path: the YAML file; ``None`` means the quickstart recipe (:data:`QUICKSTART`, shipped in
            the package; the same as ``configs/quickstart.yaml``).
        overrides: ``["training.epochs=3", ...]`` applied before validation.

    Example:
        >>> cfg = load_recipe("configs/quickstart.yaml", ["training.epochs=2"])
        >>> cfg.training.epochs
        2
    """
    data = read_yaml(path or QUICKSTART)
    for assignment in overrides or []:
        apply_override(data, assignment)
    return validate_recipe(data)


def load_run_recipe(
    target: str | Path, recipe: str | Path | None = None, overrides: list[str] | None = None
) -> RecipeConfig:
    """The recipe of a trained model: ``recipe`` if given, else the run folder's ``config.yaml``
    (``target`` is a run folder or a ``.keras`` file inside one); overrides applied.

    Raises:
        UserError: no recipe to be found, or an invalid one.
    """
    if recipe:
        return load_recipe(recipe, overrides)
    target = Path(target)
    run_dir = target if target.is_dir() else target.parent
    cfg_path = RunFolder(run_dir).config
    if not cfg_path.is_file():
        raise UserError(
            f"{target}: no config.yaml beside it; pass --recipe RECIPE to say which data to use"
        )
    data = read_yaml(cfg_path)
    for assignment in overrides or []:
        apply_override(data, assignment)
    return validate_recipe(data)
