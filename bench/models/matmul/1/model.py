"""Benchmark matmul: OUTPUT0 = INPUT0 [B,256] @ W, W a fixed [256,256] FP32 matrix.

The requests of one dynamic batch are stacked and multiplied at once, then split back per request.
"""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.weights = np.random.default_rng(0).standard_normal((256, 256), dtype=np.float32)

    def execute(self, requests):
        inputs = [pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy() for r in requests]
        product = np.concatenate(inputs) @ self.weights
        responses, start = [], 0
        for block in inputs:
            rows = product[start : start + len(block)]
            start += len(block)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", rows)]))
        return responses
