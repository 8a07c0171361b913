"""Benchmark pipeline step: post-processing, OUTPUT0 = INPUT0 - 3 (runs unchanged on Triton and Seawall)."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", data - 3)]))
        return responses
