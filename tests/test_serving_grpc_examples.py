"""TF Serving's tf.Example RPCs (Classify, Regress, MultiInference) through the real
``tensorflow-serving-api`` client stubs, against a real server over a real channel."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

grpc = pytest.importorskip("grpc")
pytest.importorskip("tensorflow_serving")
pytest.importorskip("uvicorn")

import tensorflow as tf  # noqa: E402
from grpc_helpers import (  # noqa: E402
    INVALID,
    digits_and_examples_servers,
    example,
    rpc_error,
)
from tensorflow_serving.apis import classification_pb2, inference_pb2, regression_pb2  # noqa: E402


@pytest.fixture(scope="module")
def servers():
    yield from digits_and_examples_servers("grpc-examples-base")


# --- Classify and Regress ---------------------------------------------------------------------


def _classify(name: str = "ex", signature: str = "", examples=()) -> Any:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    request.input.example_list.examples.extend(examples)
    return request


def test_classify_and_regress_on_example_signatures(servers):
    request = _classify(examples=[example(1.0, 0.5), example(-2.0, 0.0)])
    response = servers.predictions.Classify(request, timeout=30)
    assert response.model_spec.name == "ex" and response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    for row, s in zip(response.result.classifications, [1.5, -2.0], strict=True):
        assert [c.label for c in row.classes] == ["low", "high"]
        expected = np.exp([-s, s]) / np.exp([-s, s]).sum()
        np.testing.assert_allclose([c.score for c in row.classes], expected, rtol=1e-6)
    # Scores only: labels stay empty.
    response = servers.predictions.Classify(
        _classify(signature="scores_only", examples=[example(0.0, 0.0)]), timeout=30
    )
    assert [(c.label, c.score) for c in response.result.classifications[0].classes] == [
        ("", 0.5),
        ("", 0.5),
    ]
    # A context's features go with every example (the example's own win).
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "ex"
    listed = request.input.example_list_with_context
    listed.context.CopyFrom(example(3.0, 3.0))
    listed.examples.extend([tf.train.Example(), example(0.0, 1.0)])
    scores = [
        r.classes[1].score
        for r in servers.predictions.Classify(request, timeout=30).result.classifications
    ]
    np.testing.assert_allclose(scores, [1 / (1 + np.exp(-12.0)), 1 / (1 + np.exp(-2.0))], rtol=1e-6)

    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "ex"
    request.model_spec.signature_name = "regress"
    request.input.example_list.examples.extend([example(1.0, 2.0), example(-1.0, 0.25)])
    response = servers.predictions.Regress(request, timeout=30)
    assert [r.value for r in response.result.regressions] == [3.0, -0.75]
    assert response.model_spec.signature_name == "regress"


def test_classify_and_regress_errors_are_tf_servings(servers):
    classify, regress = servers.predictions.Classify, servers.predictions.Regress
    one = [example(1.0, 1.0)]
    assert rpc_error(classify, classification_pb2.ClassificationRequest()) == (
        INVALID,
        "Missing ModelSpec",
    )
    # kerasdl's exports are predict signatures: three outputs, an input named "images".
    assert rpc_error(classify, _classify("digits", examples=one)) == (
        INVALID,
        "Expected one or two output Tensors, found 3",
    )
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "digits"
    request.input.example_list.examples.extend(one)
    assert rpc_error(regress, request) == (INVALID, "Expected one output Tensor.")
    request.model_spec.name = "ex"  # serving_default has two outputs: classes, scores
    assert rpc_error(regress, request) == (INVALID, "Expected one output Tensor.")
    code, message = rpc_error(classify, _classify(signature="regress", examples=one))
    assert code == INVALID
    assert message.startswith(
        'Expected classification signature outputs to contain at least one of "classes" or '
        '"scores". Signature was: inputs {\n  key: "inputs"'
    )
    assert rpc_error(classify, _classify(signature="nope", examples=one)) == (
        INVALID,
        "No signature was found with the name: nope",
    )
    assert rpc_error(classify, _classify()) == (INVALID, "Input is empty.")
    code, message = rpc_error(classify, _classify(examples=[example(1.0)]))  # 1 value, not 2
    assert code == INVALID and "x" in message
    assert rpc_error(classify, _classify("nope", examples=one))[0] == grpc.StatusCode.NOT_FOUND


# --- MultiInference ---------------------------------------------------------------------------

CLASSIFY, REGRESS = "tensorflow/serving/classify", "tensorflow/serving/regress"


def _multi(*tasks: tuple[str, str], examples=(), model: str = "ex") -> Any:
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in tasks:
        task = request.tasks.add(method_name=method)
        task.model_spec.name = model
        task.model_spec.signature_name = signature
    request.input.example_list.examples.extend(examples)
    return request


def test_multi_inference_answers_each_task_as_its_own_rpc_would(servers):
    rows = [example(1.0, 0.5), example(-2.0, 0.0)]
    request = _multi(("", CLASSIFY), ("regress", REGRESS), ("scores_only", CLASSIFY), examples=rows)
    response = servers.predictions.MultiInference(request, timeout=30)
    assert len(response.results) == 3
    classify = servers.predictions.Classify(_classify(examples=rows), timeout=30)
    first = response.results[0]
    assert first.model_spec.name == "ex" and first.model_spec.version.value == 1
    assert first.model_spec.signature_name == "serving_default"
    assert first.classification_result == classify.result
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name, regress.model_spec.signature_name = "ex", "regress"
    regress.input.example_list.examples.extend(rows)
    assert response.results[1].regression_result == (
        servers.predictions.Regress(regress, timeout=30).result
    )
    assert [r.value for r in response.results[1].regression_result.regressions] == [1.5, -2.0]
    assert response.results[1].model_spec.signature_name == "regress"
    scores = response.results[2].classification_result.classifications[0].classes
    assert [c.label for c in scores] == ["", ""]  # scores_only: no labels


def test_multi_inference_errors_are_tf_servings(servers):
    multi = servers.predictions.MultiInference
    one = [example(1.0, 1.0)]
    assert rpc_error(multi, inference_pb2.MultiInferenceRequest()) == (
        INVALID,
        "ModelSpec has no name specified.",
    )
    request = _multi(("", CLASSIFY), ("regress", REGRESS), examples=one)
    request.tasks[1].model_spec.name = "digits"
    assert rpc_error(multi, request) == (
        INVALID,
        "All ModelSpecs in a MultiInferenceRequest must access the same model name.",
    )
    request.tasks[1].model_spec.name = ""
    assert rpc_error(multi, request) == (INVALID, "Found ModelSpec with an empty model name.")
    assert rpc_error(multi, _multi(("regress", REGRESS), ("regress", REGRESS), examples=one)) == (
        INVALID,
        "Duplicate evaluation of signature: regress",
    )
    assert rpc_error(multi, _multi(("", CLASSIFY), ("serving_default", CLASSIFY))) == (
        INVALID,
        "Duplicate evaluation of signature: serving_default",
    )
    assert rpc_error(multi, _multi(("nope", CLASSIFY), examples=one)) == (
        INVALID,
        "Requested signature not found in model graph: nope",
    )
    assert rpc_error(multi, _multi(("", "tensorflow/serving/predict"), examples=one)) == (
        grpc.StatusCode.UNIMPLEMENTED,
        "Unsupported signature method_name: tensorflow/serving/predict",
    )
    assert rpc_error(multi, _multi(("regress", CLASSIFY), examples=one))[1].startswith(
        'Expected classification signature outputs to contain at least one of "classes"'
    )
    assert rpc_error(multi, _multi(("", CLASSIFY))) == (INVALID, "Input is empty.")
    assert rpc_error(multi, _multi(("", CLASSIFY), model="nope", examples=one))[0] == (
        grpc.StatusCode.NOT_FOUND
    )
