"""TF Serving's tf.Example RPCs: Classify, Regress and MultiInference (``classifier.cc``,
``regressor.cc``, ``multi_inference.cc``, ``util.cc``).

They run a signature that has TF Serving's structure: one input ``inputs`` taking serialized
``tf.Example`` strings; outputs ``classes`` and/or ``scores`` (classification), or one
``outputs`` (regression), whatever its method name, as TF Serving does by default. Any other
signature (kerasdl's exports are predict signatures) gets TF Serving's INVALID_ARGUMENT, e.g.
"Expected one or two output Tensors, found 3". An unknown signature is INVALID_ARGUMENT here
("No signature was found with the name: s").

**MultiInference** runs several classify/regress tasks of one model on the same examples, with
TF Serving's checks: every task names the same model ("All ModelSpecs in a MultiInferenceRequest
must access the same model name."), no signature twice ("Duplicate evaluation of signature: s"),
a method name ``tensorflow/serving/classify`` or ``tensorflow/serving/regress`` (else
UNIMPLEMENTED "Unsupported signature method_name: m"). The version is the first task's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from tensorflow_serving.apis import classification_pb2, inference_pb2, regression_pb2

from kerasdl.serving.errors import ServingError, invalid
from kerasdl.serving.grpc_common import debug_string, fill_model_spec, rpc, servable_of
from kerasdl.serving.repository import ModelRepository
from kerasdl.serving.servable import DEFAULT_SIGNATURE, Servable, Signature

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
_KINDS = {CLASSIFY_METHOD: "classification", REGRESS_METHOD: "regression"}


class ExampleRPCs:
    """Classify, Regress and MultiInference, mixed into the PredictionService servicer.

    Uses the servicer's ``repo``, ``run`` (a signature on batched inputs) and ``max_batch``.
    """

    repo: ModelRepository
    run: Callable[[Servable, Signature, dict[str, np.ndarray]], dict[str, np.ndarray]]
    max_batch: int

    def _example_signature(self, request: Any, kind: str) -> tuple[Servable, Signature]:
        servable = servable_of(self.repo, request)
        name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        sig = servable.signatures.get(name)
        if sig is None:
            raise invalid(f"No signature was found with the name: {name}")
        return servable, _checked(servable, sig, kind)

    def _run_examples(
        self, examples: np.ndarray, servable: Servable, sig: Signature
    ) -> dict[str, np.ndarray]:
        if examples.shape[0] > self.max_batch:
            raise invalid(
                f"Batch size {examples.shape[0]} exceeds the server's maximum of "
                f"{self.max_batch} (--max-batch)."
            )
        return self.run(servable, sig, {"inputs": examples})

    def _examples_rpc(self, request: Any, kind: str, response: Any) -> None:
        """Classify's and Regress's common part: find the ``kind`` signature, fill the
        response's model spec and result from its run on the request's examples."""
        servable, sig = self._example_signature(request, kind)
        examples = serialized_examples(request.input)
        outputs = self._run_examples(examples, servable, sig)
        fill_model_spec(response.model_spec, request, servable, sig.name)
        _RESULTS[kind](response.result, len(examples), outputs)

    @rpc
    def Classify(self, request: Any, context: Any) -> Any:  # noqa: N802
        response = classification_pb2.ClassificationResponse()
        self._examples_rpc(request, "classification", response)
        return response

    @rpc
    def Regress(self, request: Any, context: Any) -> Any:  # noqa: N802
        response = regression_pb2.RegressionResponse()
        self._examples_rpc(request, "regression", response)
        return response

    @rpc
    def MultiInference(self, request: Any, context: Any) -> Any:  # noqa: N802
        if not request.tasks or not request.tasks[0].HasField("model_spec"):
            raise invalid("ModelSpec has no name specified.")  # GetModelSpecFromRequest
        servable = servable_of(self.repo, request.tasks[0])
        model, seen, plan = request.tasks[0].model_spec.name, set(), []
        for task in request.tasks:  # TensorFlowMultiInferenceRunner::Infer
            if not task.model_spec.name:
                raise invalid("Found ModelSpec with an empty model name.")
            if task.model_spec.name != model:
                raise invalid(
                    "All ModelSpecs in a MultiInferenceRequest must access the same model name."
                )
            name = task.model_spec.signature_name or DEFAULT_SIGNATURE
            if name in seen:
                raise invalid(f"Duplicate evaluation of signature: {name}")
            seen.add(name)
            if name not in servable.signatures:
                raise invalid(f"Requested signature not found in model graph: {name}")
            kind = _KINDS.get(task.method_name)
            if kind is None:
                raise ServingError(
                    "UNIMPLEMENTED", f"Unsupported signature method_name: {task.method_name}"
                )
            plan.append((task, kind, _checked(servable, servable.signatures[name], kind)))
        examples = serialized_examples(request.input)
        response = inference_pb2.MultiInferenceResponse()
        for task, kind, sig in plan:
            outputs = self._run_examples(examples, servable, sig)
            result = response.results.add()
            fill_model_spec(result.model_spec, task, servable, sig.name)
            _RESULTS[kind](getattr(result, f"{kind}_result"), len(examples), outputs)
        return response


def _checked(servable: Servable, sig: Signature, kind: str) -> Signature:
    """``sig`` if it has TF Serving's ``kind`` structure (PreProcessClassification/Regression)."""
    name = sig.name
    if len(sig.inputs) != 1:
        raise invalid("Expected one input Tensor.")
    if kind == "classification":
        if len(sig.outputs) not in (1, 2):
            raise invalid(f"Expected one or two output Tensors, found {len(sig.outputs)}")
    elif len(sig.outputs) != 1:
        raise invalid("Expected one output Tensor.")
    if "inputs" not in sig.inputs:
        raise invalid(f"No {kind} inputs found in SignatureDef: {debug_string(servable, name)}")
    if kind == "classification" and not {"classes", "scores"} & set(sig.outputs):
        raise invalid(
            'Expected classification signature outputs to contain at least one of "classes" '
            f'or "scores". Signature was: {debug_string(servable, name)}'
        )
    if kind == "regression" and "outputs" not in sig.outputs:
        raise invalid(
            f"No regression outputs found in SignatureDef: {debug_string(servable, name)}"
        )
    if not sig.inputs["inputs"].is_string:
        raise invalid(
            f"Expects arg[0] to be {sig.inputs['inputs'].tf_dtype.name} but string is provided"
        )
    return sig


def _classification_result(result: Any, n: int, outputs: dict[str, np.ndarray]) -> None:
    """Fill a ``ClassificationResult`` (PostProcessClassificationResult)."""
    classes, scores = outputs.get("classes"), outputs.get("scores")
    for name, arr, kind in (("classes", classes, "O"), ("scores", scores, "f")):
        if arr is None:
            continue
        if arr.ndim != 2:
            raise invalid(
                f"Expected Tensor shape: [batch_size num_classes] but got {list(arr.shape)}"
            )
        if arr.dtype.kind != kind or (kind == "f" and arr.dtype != np.float32):
            want = "DT_STRING" if kind == "O" else "DT_FLOAT"
            raise invalid(f"Expected {name} Tensor of {want}. Got: {arr.dtype.name}")
        if arr.shape[0] != n:
            raise invalid(f"Expected {name} output batch size of {n}. Got: {arr.shape[0]}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid(
            "Tensors class and score should match in dim_size(1). Got "
            f"{classes.shape[1]} vs. {scores.shape[1]}"
        )
    width = (classes if classes is not None else scores).shape[1]
    for i in range(n):
        row = result.classifications.add()
        for c in range(width):
            cl = row.classes.add()
            if classes is not None:
                label = classes[i, c]
                cl.label = (
                    label if isinstance(label, str) else bytes(label).decode("utf-8", "replace")
                )
            if scores is not None:
                cl.score = float(scores[i, c])


def _regression_result(result: Any, n: int, outputs: dict[str, np.ndarray]) -> None:
    """Fill a ``RegressionResult`` (PostProcessRegressionResult)."""
    out = outputs["outputs"]
    if not (out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1)):
        raise invalid(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but "
            f"got {list(out.shape)}"
        )
    if out.shape[0] != n:
        raise invalid(f"Input batch size did not match output batch size: {n} vs. {out.shape[0]}")
    if out.dtype != np.float32:
        raise invalid(f"Expected output Tensor of DT_FLOAT.  Got: {out.dtype.name}")
    for value in out.reshape(-1).tolist():
        result.regressions.add(value=value)


_RESULTS = {"classification": _classification_result, "regression": _regression_result}


def serialized_examples(input_proto: Any) -> np.ndarray:
    """The serialized ``tf.Example`` strings of an ``Input`` (InputToSerializedExampleTensor).

    With ``example_list_with_context`` each example is its context's bytes followed by its own,
    which parses as the two merged (the example's features win), exactly as TF Serving builds it.
    """
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        blobs = [e.SerializeToString() for e in input_proto.example_list.examples]
    elif kind == "example_list_with_context":
        ctx = input_proto.example_list_with_context.context.SerializeToString()
        blobs = [
            ctx + e.SerializeToString() for e in input_proto.example_list_with_context.examples
        ]
    else:
        blobs = []
    if not blobs:
        raise invalid("Input is empty.")
    out = np.empty(len(blobs), dtype=object)
    out[:] = blobs
    return out
