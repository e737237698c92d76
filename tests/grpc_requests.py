"""The PredictRequest builder shared by the gRPC serving tests (``test_serving_grpc*.py``)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2


def predict_request(name: str = "digits", **inputs: np.ndarray) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return request
