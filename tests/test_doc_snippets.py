"""The Python examples in README.md and docs/*.md call kerasdl as it is.

Each ```python block must be Python, every ``kerasdl`` name it imports or calls must exist, and
every call of a kerasdl (or Keras) function or class must fit its signature: the number of
positional arguments and the keyword names (``inspect.Signature.bind``). A
``kerasdl.create_model("name", ...)`` call must name a registered model and only keywords that
model takes. The examples are not run (they use the reader's data, e.g. ``x_train``), so this
catches what drifts when an API is renamed or changes its arguments.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted(REPO.glob("docs/*.md"))]
ROOTS = ("kerasdl", "keras")


def snippets() -> list[tuple[str, str]]:
    """(where, code) for every ```python block of the docs."""
    out = []
    for doc in DOCS:
        text = doc.read_text()
        for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
            line = text[: m.start()].count("\n") + 2
            out.append((f"{doc.relative_to(REPO)}:{line}", m.group(1)))
    return out


def _attr(obj: Any, name: str) -> Any:
    """``obj.name``, importing a submodule when ``obj`` is a package that loads it lazily."""
    try:
        return getattr(obj, name)
    except AttributeError:
        if not isinstance(obj, ModuleType):
            raise
        try:
            return importlib.import_module(f"{obj.__name__}.{name}")
        except ModuleNotFoundError:
            raise AttributeError(f"{obj.__name__} has no {name!r}") from None


def _imported_names(tree: ast.Module) -> dict[str, Any]:
    """What each name a snippet imports from kerasdl or Keras refers to."""
    names: dict[str, Any] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in ROOTS:
                    if alias.asname:
                        names[alias.asname] = importlib.import_module(alias.name)
                    else:
                        root = alias.name.split(".")[0]
                        names[root] = importlib.import_module(root)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ROOTS:
            module = importlib.import_module(node.module)
            for alias in node.names:
                names[alias.asname or alias.name] = _attr(module, alias.name)
    return names


def _resolve(expr: ast.expr, names: dict[str, Any]) -> tuple[str, Any] | None:
    """The dotted name and object of ``a.b.c`` when ``a`` is an imported kerasdl/Keras name."""
    parts = []
    while isinstance(expr, ast.Attribute):
        parts.append(expr.attr)
        expr = expr.value
    if not isinstance(expr, ast.Name) or expr.id not in names:
        return None
    obj, dotted = names[expr.id], expr.id
    for part in reversed(parts):
        dotted += f".{part}"
        obj = _attr(obj, part)  # AttributeError: the snippet calls what does not exist
    return dotted, obj


@pytest.mark.parametrize("where,code", snippets(), ids=[w for w, _ in snippets()])
def test_doc_example_calls_kerasdl_as_it_is(where: str, code: str) -> None:
    from kerasdl.registry import check_model_kwargs, get_entry

    tree = ast.parse(code, filename=where)  # SyntaxError: the block is not Python
    names = _imported_names(tree)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        found = _resolve(node.func, names)
        if found is None:
            continue
        dotted, func = found
        if any(isinstance(a, ast.Starred) for a in node.args) or any(
            k.arg is None for k in node.keywords
        ):
            continue
        keywords = {k.arg: None for k in node.keywords}
        try:
            signature = inspect.signature(func)
        except (TypeError, ValueError):  # a builtin without one
            continue
        try:
            signature.bind(*[None] * len(node.args), **keywords)
        except TypeError as e:
            pytest.fail(f"{where}: {dotted}(...) does not fit {dotted}{signature}: {e}")
        if dotted.endswith("create_model") and node.args:
            first = node.args[0]
            assert isinstance(first, ast.Constant), where
            entry = get_entry(first.value)  # UserError: no such model
            own = {k: v for k, v in keywords.items() if k not in signature.parameters}
            check_model_kwargs(entry.builder, own, f"{where}: create_model({first.value!r})")


def test_the_check_sees_a_wrong_call() -> None:
    """The checks above fail on a renamed function, a wrong keyword and an unknown model."""
    from kerasdl.errors import UserError

    run = test_doc_example_calls_kerasdl_as_it_is
    with pytest.raises(AttributeError):
        run("x", "from kerasdl.data import ssl\nssl.no_such_function(1)\n")
    with pytest.raises(pytest.fail.Exception, match="does not fit"):
        run("x", "from kerasdl.data import ssl\nssl.split_labelled(d, labels_per_klass=10)\n")
    with pytest.raises(UserError):
        run("x", "import kerasdl\nkerasdl.create_model('resnet_19', num_classes=10)\n")
    with pytest.raises(UserError, match="widht"):
        run("x", "import kerasdl\nkerasdl.create_model('resnet18', widht=2)\n")
    with pytest.raises(SyntaxError):
        run("x", "a = 1  b = 2\n")


def commands() -> list[tuple[str, str]]:
    """(where, command) for every ``kerasdl ...`` line of the docs' shell blocks.

    Notation is read as a reader reads it: ``[--opt X]`` is the option given, ``--opt N`` a
    number, ``...`` and a trailing ``&`` are dropped, ``\\`` continues a line, and a line such
    as ``kerasdl predict: error: ...`` is output.
    """
    out = []
    for doc in [*DOCS, REPO / "benchmarks" / "README.md"]:
        lang, lineno, lines = None, 0, doc.read_text().splitlines()
        for lineno, line in enumerate(lines, 1):
            while line.endswith("\\") and lineno < len(lines):  # a continued line
                line = line[:-1] + lines[lineno]
                lines[lineno] = ""
            if line.startswith("```"):
                lang = line[3:].strip() if lang is None else None
                continue
            if lang not in ("bash", "sh", "console", ""):
                continue
            for part in re.split(r"&&|\|\||;|\|", line.strip().removeprefix("$ ")):
                part = re.sub(r"^(\w+=\S+\s+)+", "", part.strip())  # VAR=value before it
                if re.match(r"kerasdl [\w-]+(\s|$)", part):
                    part = re.sub(r"\[([^\]]*)\]", r"\1", part.split(" #")[0])
                    part = part.replace("...", "").strip().removesuffix("&").strip()
                    part = re.sub(r"(--\S+) N\b", r"\1 1", part)  # a number's placeholder
                    out.append((f"{doc.relative_to(REPO)}:{lineno}", part))
    return out


def test_the_docs_show_many_commands() -> None:
    assert len(commands()) >= 90  # the parser below reads them all (a broken reader reads few)


@pytest.mark.parametrize("where,command", commands(), ids=[w for w, _ in commands()])
def test_doc_command_parses(where: str, command: str, capsys: pytest.CaptureFixture) -> None:
    """Every documented ``kerasdl`` command line is accepted by the command's own parser."""
    import shlex

    from kerasdl.cli import build_parser

    try:
        build_parser().parse_args(shlex.split(command)[1:])
    except SystemExit as e:
        if e.code:
            pytest.fail(f"{where}: {command}\n{capsys.readouterr().err.strip()}")


def test_a_wrong_documented_command_fails(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(pytest.fail.Exception, match="unrecognized arguments: --originalz"):
        test_doc_command_parses(
            "x", "kerasdl augment-preview r.yaml --out g.png --originalz", capsys
        )
    found = dict((c, w) for w, c in commands())
    assert any(c.endswith("--originals") and "--set" in c for c in found)  # a continued line
