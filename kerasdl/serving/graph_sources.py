"""What a SavedModel's string tensors statically are, for :mod:`kerasdl.serving.graph_walk`.

:class:`_Body` traces a data input of a graph or function body back through function arguments,
captures, ``Identity``-like ops and TF2's asset-path variables (:func:`_asset_variables`) to an
asset, the saver's filename tensor or a constant (a :class:`_Source`), without running anything.
Beside it, the small readers of ``MetaGraphDef`` protos the walker uses: tensor and node names,
the functions an attribute names, an attribute's text, a signature's output tensors and readable
object-graph paths. :class:`~kerasdl.serving.graph_walk.GraphWalker` is the only user.
"""

from __future__ import annotations

from typing import Any, NamedTuple

_PASS_THROUGH = ("Identity", "Snapshot", "StopGradient", "PreventGradient", "EnsureShape")


class _Source(NamedTuple):
    """What a string tensor statically is: an asset, the saver's filename, or a constant."""

    kind: str  # "asset", "saver" or "const"
    value: str = ""
    ok: bool = True  # for assets: resolves inside the version's assets/ folder


_SAVER = _Source("saver")


def _node_name(ref: str) -> str:
    return ref.lstrip("^").split(":")[0]


def _tensor_key(ref: str) -> str:
    """A graph input reference ("n", "n:1") as a tensor name ("n:0", "n:1")."""
    return ref if ":" in ref else f"{ref}:0"


def _func_names(attr: Any) -> list[str]:
    """Every function an AttrValue names (with its nested attributes), depth first."""
    kind = attr.WhichOneof("value")
    if kind != "func" and (kind != "list" or not attr.list.func):
        return []
    out = []
    stack = [attr]
    while stack:
        value = stack.pop()
        kind = value.WhichOneof("value")
        if kind == "func":
            out.append(value.func.name)
            stack.extend(value.func.attr.values())
        elif kind == "list":
            for func in value.list.func:
                out.append(func.name)
                stack.extend(func.attr.values())
    return out


def _const_string(node: Any) -> str | None:
    if node.op not in ("Const", "HostConst"):
        return None
    tensor = node.attr["value"].tensor
    if tensor.string_val:
        return tensor.string_val[0].decode("utf-8", "replace")
    return None


class _Body:
    """A graph or a function body: its nodes and where its string inputs come from."""

    def __init__(
        self,
        nodes: dict[str, Any],
        location: str,
        args: dict[str, int] | None = None,
        arg_sources: tuple = (),
        tensor_sources: dict[str, _Source] | None = None,
        variable_sources: dict[str, _Source] | None = None,
    ) -> None:
        self.nodes = nodes
        self.location = location
        self.args = args or {}
        self.arg_sources = arg_sources
        self.tensor_sources = tensor_sources or {}
        self.variable_sources = variable_sources or {}
        self.is_function = args is not None
        self.chain: tuple[str, ...] = ()

    def source(self, ref: str) -> _Source | None:
        """What a data input statically is (through Identity-like ops), or None."""
        for _ in range(64):
            if ref.startswith("^"):
                return None
            name = _node_name(ref)
            if self.is_function:
                if name in self.args:
                    i = self.args[name]
                    return self.arg_sources[i] if i < len(self.arg_sources) else None
            else:
                found = self.tensor_sources.get(_tensor_key(ref))
                if found is not None:
                    return found
            node = self.nodes.get(name)
            if node is None:
                return None
            if node.op == "ReadVariableOp" and node.input:
                return self.variable_sources.get(_node_name(node.input[0]))
            if node.op in _PASS_THROUGH and node.input:
                ref = node.input[0]
            elif node.op == "IdentityN":
                index = int(ref.rsplit(":", 1)[1]) if ref.count(":") >= 1 else 0
                if index >= len(node.input):
                    return None
                ref = node.input[index]
            else:
                value = _const_string(node)
                return None if value is None else _Source("const", value)
        return None

    def data_sources(self, node: Any) -> tuple:
        return tuple(self.source(ref) for ref in node.input if not ref.startswith("^"))


def _asset_variables(graph: dict[str, Any], assets: dict[str, _Source]) -> dict[str, _Source]:
    """Graph variables that only ever hold one asset's path (TF2 exports keep asset paths so).

    A variable qualifies when every node using it reads it, asks whether it is initialized, or
    assigns it an asset tensor (the same one); passed to anything else (a function, the saver's
    restore) it could hold any string.
    """
    if not assets:
        return {}
    body = _Body(graph, "", tensor_sources=assets)
    variables = {name for name, node in graph.items() if node.op == "VarHandleOp"}
    variables |= {f"{name}:0" for name in variables}
    found: dict[str, _Source] = {}
    spoiled: set[str] = set()
    for node in graph.values():
        if node.op in ("ReadVariableOp", "VarIsInitializedOp"):
            continue
        for i, ref in enumerate(node.input):
            if ref not in variables:
                continue
            name = _node_name(ref)
            assigns = node.op == "AssignVariableOp" and i == 0
            source = body.source(node.input[1]) if assigns else None
            if source is None or source.kind != "asset" or found.get(name, source) != source:
                spoiled.add(name)
            else:
                found[name] = source
    return {k: v for k, v in found.items() if k not in spoiled}


def _attr_text(node: Any, name: str) -> str | None:
    if name not in node.attr:
        return None
    value = node.attr[name]
    kind = value.WhichOneof("value")
    if kind == "s":
        return value.s.decode("utf-8", "replace")
    if kind == "list":
        return ",".join(s.decode("utf-8", "replace") for s in value.list.s)
    return None


def _signature_tensors(signature: Any) -> list[str]:
    """Every tensor a SignatureDef's outputs name (dense, sparse and composite encodings)."""
    names = []
    stack = list(signature.outputs.values())
    while stack:
        info = stack.pop()
        kind = info.WhichOneof("encoding")
        if kind == "name":
            names.append(info.name)
        elif kind == "coo_sparse":
            sparse = info.coo_sparse
            names += [sparse.values_tensor_name, sparse.indices_tensor_name,
                      sparse.dense_shape_tensor_name]  # fmt: skip
        elif kind == "composite_tensor":
            stack.extend(info.composite_tensor.components)
    return names


def _object_paths(graph: Any) -> dict[int, str]:
    """A readable path (``root.signatures.serving_default``) for each object-graph node."""
    paths = {0: "root"}
    queue = [0]
    while queue:
        node_id = queue.pop(0)
        for child in graph.nodes[node_id].children:
            if child.node_id not in paths and child.node_id < len(graph.nodes):
                paths[child.node_id] = f"{paths[node_id]}.{child.local_name}"
                queue.append(child.node_id)
    return paths
