"""The static walk behind :mod:`kerasdl.serving.safety`: which ops of a SavedModel can run.

:class:`GraphWalker` reads a ``MetaGraphDef`` (never running it). From each root (a serving
signature, a load-time function or op) it follows function calls and function-valued attributes,
checks every node against :data:`~kerasdl.serving.unsafe_ops.DENIED_OPS`, and decides the
conditional uses (assets, the saver's restore) by tracing string inputs back through function
arguments, captures, ``Identity`` ops and TF2's asset-path variables to an asset, the saver's
filename tensor or a constant (that tracing, and the proto readers, are in
:mod:`kerasdl.serving.graph_sources`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kerasdl.serving.graph_sources import (
    _SAVER,
    _asset_variables,
    _attr_text,
    _Body,
    _func_names,
    _node_name,
    _object_paths,
    _signature_tensors,
    _Source,
    _tensor_key,
)
from kerasdl.serving.unsafe_ops import DENIED_OP_PREFIXES, DENIED_OPS, HIDDEN, Rule

UNREGISTERED = Rule(HIDDEN, "op type not registered in this TensorFlow (a custom-op library)")
UNDEFINED = Rule(HIDDEN, "calls a function the SavedModel does not define")
TWICE = Rule(HIDDEN, "a function defined twice, differently (the loader picks one)")

# Object-graph children that tf.saved_model.load (or unloading) runs.
_LOAD_TIME_CHILDREN = ("_create_resource", "_initialize", "_destroy_resource")
_CALL_OPS = ("PartitionedCall", "StatefulPartitionedCall", "TPUPartitionedCall")
_INIT_COLLECTIONS = ("saved_model_main_op", "legacy_init_op", "table_initializer", "local_init_op")
_INIT_SIGNATURE = "__saved_model_init_op"
_TRAIN_SIGNATURE = "__saved_model_train_op"


@dataclass(frozen=True)
class Finding:
    """One refused op: its type, why, where it is and which root reaches it."""

    op: str
    rule: Rule
    location: str  # "function NAME" or "graph node NAME"
    root: str  # e.g. "signature 'serving_default'"
    detail: str = ""
    via: tuple[str, ...] = ()  # the calls from the root to ``location``, outermost first

    def describe(self, calls: bool = False) -> str:
        """One line; with ``calls``, the chain of calls from the root too."""
        detail = f" {self.detail}" if self.detail else ""
        chain = f" (via {' > '.join(self.via)})" if calls and self.via else ""
        where = f"in {self.location}{chain}, reached from {self.root}"
        return f"{self.op} ({self.rule.reason}){detail} {where}"


_REGISTERED: dict[str, bool] = {}


def _is_registered(op: str) -> bool:
    if op not in _REGISTERED:
        from tensorflow.python.framework import op_def_registry

        _REGISTERED[op] = op_def_registry.get(op) is not None
    return _REGISTERED[op]


_RULES: dict[str, Rule | None] = {}


def _rule_for(op: str) -> Rule | None:
    if op not in _RULES:
        rule = DENIED_OPS.get(op)
        if rule is None:
            rule = next((r for p, r in DENIED_OP_PREFIXES.items() if op.startswith(p)), None)
        _RULES[op] = rule
    return _RULES[op]


class GraphWalker:
    """Walks a SavedModel's meta graphs from their roots and records the denied ops reached.

    Args:
        path: the version folder (assets are resolved inside its ``assets/``).

    Attributes:
        findings: the refused uses of denied ops, in the order found.
        op_types: every op type reached.
        functions_walked: library functions walked (a function reached with different argument
            sources counts once per source pattern).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.assets_dir = os.path.realpath(path / "assets")
        self.findings: list[Finding] = []
        self.op_types: set[str] = set()
        self.functions_walked = 0
        self._seen: set[tuple[str, str, str]] = set()

    # --- roots -----------------------------------------------------------------------------

    def scan(self, meta_graph: Any) -> None:
        """Walk one ``MetaGraphDef`` (adds to :attr:`findings` and :attr:`op_types`)."""
        library = meta_graph.graph_def.library
        self.library = {}
        for fdef in library.function:
            name = fdef.signature.name
            if name in self.library and self.library[name] != fdef:
                self._record(name, TWICE, "the function library", "the loader", "")
            self.library[name] = fdef
        self.gradients = {g.function_name: g.gradient_func for g in library.gradient}
        self.graph = {n.name: n for n in meta_graph.graph_def.node}
        self._visited_functions: set[tuple] = set()
        self._graph_visited: dict[bool, set[str]] = {}
        self._queue: list[tuple[str, tuple, str, str]] = []
        assets = self._asset_sources(meta_graph)
        self._asset_variables = _asset_variables(self.graph, assets)
        saver = meta_graph.saver_def

        for key, signature in sorted(meta_graph.signature_def.items()):
            root = "the init op" if key == _INIT_SIGNATURE else f"signature '{key}'"
            if key == _TRAIN_SIGNATURE:
                continue  # never run by a server or a loader
            self._walk_graph(_signature_tensors(signature), assets, root)
        for key in _INIT_COLLECTIONS:
            if key in meta_graph.collection_def:
                names = list(meta_graph.collection_def[key].node_list.value)
                self._walk_graph(names, assets, f"the load-time collection '{key}'")
        self._walk_graph(self._local_variable_initializers(meta_graph), assets, "variable init")
        if saver.restore_op_name:
            sources = dict(assets)
            sources[_tensor_key(saver.filename_tensor_name)] = _SAVER
            self._walk_graph([saver.restore_op_name], sources, "the saver's restore op")
        if meta_graph.HasField("object_graph_def"):
            self._object_graph_roots(meta_graph)
        self._drain()

    def _asset_sources(self, meta_graph: Any) -> dict[str, _Source]:
        out = {}
        for asset in meta_graph.asset_file_def:
            out[_tensor_key(asset.tensor_info.name)] = self._asset(asset.filename)
        return out

    def _asset(self, filename: str) -> _Source:
        resolved = os.path.realpath(os.path.join(self.assets_dir, filename))
        inside = resolved.startswith(self.assets_dir + os.sep)
        return _Source("asset", filename, inside)

    @staticmethod
    def _local_variable_initializers(meta_graph: Any) -> list[str]:
        if "local_variables" not in meta_graph.collection_def:
            return []
        from tensorflow.core.framework import variable_pb2

        names = []
        for raw in meta_graph.collection_def["local_variables"].bytes_list.value:
            var = variable_pb2.VariableDef()
            var.ParseFromString(raw)
            names.append(var.initializer_name)
        return names

    def _object_graph_roots(self, meta_graph: Any) -> None:
        graph = meta_graph.object_graph_def
        nodes = graph.nodes
        paths = _object_paths(graph)

        def functions_of(node_id: int) -> list[str]:
            """What calling the object runs: its concrete functions, or its ``__call__``'s."""
            for _ in range(len(nodes)):
                if not 0 <= node_id < len(nodes):
                    return []
                node = nodes[node_id]
                kind = node.WhichOneof("kind")
                if kind == "function":
                    return list(node.function.concrete_functions)
                if kind == "bare_concrete_function":
                    return [node.bare_concrete_function.concrete_function_name]
                calls = [c.node_id for c in node.children if c.local_name == "__call__"]
                if not calls:
                    return []
                node_id = calls[0]  # the loader makes an object with __call__ callable
            return []

        def walk(node_id: int, root: str) -> None:
            for name in functions_of(node_id):
                self._push(name, self._bound_sources(meta_graph, name), root, ())

        signatures = [c.node_id for c in nodes[0].children if c.local_name == "signatures"]
        for sig_map in signatures:
            for child in nodes[sig_map].children:
                walk(child.node_id, f"signature '{child.local_name}'")
        for node_id, node in enumerate(nodes):
            is_resource = node.WhichOneof("kind") == "resource"
            for child in node.children:
                if is_resource or child.local_name in _LOAD_TIME_CHILDREN:
                    path = f"{paths.get(node_id, f'node {node_id}')}.{child.local_name}"
                    walk(child.node_id, f"load-time function {path}")
            for name, saveable in node.saveable_objects.items():
                where = f"{paths.get(node_id, f'node {node_id}')} ({name})"
                walk(saveable.save_function, f"the checkpoint functions of {where}")
                walk(saveable.restore_function, f"the checkpoint functions of {where}")

    def _bound_sources(self, meta_graph: Any, name: str) -> tuple:
        graph = meta_graph.object_graph_def
        fdef = self.library.get(name)
        proto = graph.concrete_functions.get(name)
        if fdef is None or proto is None:
            return ()
        bound = []
        for node_id in proto.bound_inputs:
            node = graph.nodes[node_id] if node_id < len(graph.nodes) else None
            source = None
            if node is not None and node.WhichOneof("kind") == "asset":
                index = node.asset.asset_file_def_index
                if index < len(meta_graph.asset_file_def):
                    source = self._asset(meta_graph.asset_file_def[index].filename)
            bound.append(source)
        free = max(0, len(fdef.signature.input_arg) - len(bound))
        return (None,) * free + tuple(bound)

    # --- walking ---------------------------------------------------------------------------

    def _walk_graph(self, refs: Iterable[str], sources: dict[str, _Source], root: str) -> None:
        body = _Body(self.graph, "", tensor_sources=sources, variable_sources=self._asset_variables)
        stack = [_node_name(r) for r in refs if r]
        visited = self._graph_visited.setdefault(_SAVER in sources.values(), set())
        while stack:
            name = stack.pop()
            if name in visited:
                continue
            visited.add(name)
            node = self.graph.get(name)
            if node is None:
                continue
            body.location = f"graph node {name}"
            body.chain = (body.location,)
            self._check_node(node, body, root)
            stack.extend(_node_name(r) for r in node.input)

    def _push(self, name: str, sources: tuple, root: str, chain: tuple[str, ...]) -> None:
        self._queue.append((name, sources, root, chain))

    def _drain(self) -> None:
        while self._queue:
            name, sources, root, chain = self._queue.pop()
            fdef = self.library.get(name)
            if fdef is None:  # an op named as a function (SymbolicGradient), or nothing
                rule = _rule_for(name) if _is_registered(name) else UNDEFINED
                if rule is not None:
                    where = chain[-1] if chain else "the object graph"
                    self._record(name, rule, where, root, "", chain[:-1])
                continue
            n_args = len(fdef.signature.input_arg)
            sources = tuple(sources[:n_args]) + (None,) * max(0, n_args - len(sources))
            key = (name, sources, root == "the saver's restore op")
            if key in self._visited_functions:
                continue
            self._visited_functions.add(key)
            self.functions_walked += 1
            args = {a.name: i for i, a in enumerate(fdef.signature.input_arg)}
            nodes = {n.name: n for n in fdef.node_def}
            body = _Body(nodes, f"function {name}", args, sources)
            body.chain = (*chain, name)
            for node in fdef.node_def:
                self._check_node(node, body, root)
            if name in self.gradients:  # what SymbolicGradient of this function runs
                self._push(self.gradients[name], (), root, body.chain)

    def _check_node(self, node: Any, body: _Body, root: str) -> None:
        op = node.op
        self.op_types.add(op)
        if op in self.library:  # a direct call of a library function
            self._push(op, body.data_sources(node), root, body.chain)
        else:
            rule = _rule_for(op)
            if rule is None and not _is_registered(op):
                rule = UNREGISTERED
            if rule is not None:
                detail = self._refusal(op, rule, node, body, root)
                if detail is not None:
                    self._record(op, rule, body.location, root, detail, body.chain[:-1])
        for attr_name, attr in node.attr.items():
            for fname in _func_names(attr):
                if fname in self.library and op in _CALL_OPS and attr_name == "f":
                    self._push(fname, body.data_sources(node), root, body.chain)
                else:
                    self._push(fname, (), root, body.chain)

    def _refusal(self, op: str, rule: Rule, node: Any, body: _Body, root: str) -> str | None:
        """None when this use of the op is acceptable, else a detail for the message."""
        source = None
        if rule.path_input is not None:
            data = [r for r in node.input if not r.startswith("^")]
            if rule.path_input < len(data):
                source = body.source(data[rule.path_input])
        attr = _attr_text(node, rule.path_attr) if rule.path_attr else None
        when = rule.allowed_when
        if when == "asset" and source is not None and source.kind == "asset" and source.ok:
            return None
        if when == "saver_restore" and source == _SAVER and root == "the saver's restore op":
            return None
        if when == "empty_filename" and source is not None and source == ("const", "", True):
            return None
        if when == "no_file_stream" and not (attr or "").startswith("file://"):
            return None
        if when == "local_descriptor" and (
            attr in (None, "", "local://") or (attr or "").startswith("bytes://")
        ):
            return None
        if when in ("no_debug_spec", "no_vocab_file") and not attr:
            return None
        if source is not None and source.kind == "asset":
            return f"of asset '{source.value[:120]}' outside the version's assets/"
        if source is not None and source.kind == "const":
            return f"of '{source.value[:120]}'"
        if attr:
            return f"with {rule.path_attr}='{attr[:120]}'"
        return ""

    def _record(
        self, op: str, rule: Rule, location: str, root: str, detail: str, via: tuple = ()
    ) -> None:
        key = (op, location, detail)
        if key in self._seen:
            return
        self._seen.add(key)
        self.findings.append(Finding(op, rule, location, root, detail, via))


__all__ = ["UNDEFINED", "UNREGISTERED", "Finding", "GraphWalker"]
