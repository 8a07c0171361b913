"""Benchmark bls_64mib: each request makes one BLS call of identity with a 64 MiB FP32 tensor (made once, at
initialize) and answers [elements, first, last] of what came back. The request and reply are a few bytes, so
the cell's latency and server CPU are the cost of moving 64 MiB to another model and back; runs unchanged on
Triton and Seawall."""

import numpy as np
import triton_python_backend_utils as pb_utils

ELEMENTS = 64 * 1024 * 1024 // 4


class TritonPythonModel:
    def initialize(self, args):
        self.data = np.arange(ELEMENTS, dtype=np.float32)

    def execute(self, requests):
        responses = []
        for request in requests:
            seed = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            self.data[0] = seed[0]
            call = pb_utils.InferenceRequest(
                model_name="identity",
                requested_output_names=["OUTPUT0"],
                inputs=[pb_utils.Tensor("INPUT0", self.data)],
            )
            response = call.exec()
            if response.has_error():
                responses.append(pb_utils.InferenceResponse(error=response.error()))
                continue
            out = pb_utils.get_output_tensor_by_name(response, "OUTPUT0").as_numpy()
            summary = np.array([out.size, out[0], out[-1]], dtype=np.float32)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", summary)]))
        return responses
