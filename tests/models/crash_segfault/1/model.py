"""crash_segfault: dereferences NULL when the request parameter "crash" is true; echoes otherwise."""

import ctypes

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            if '"crash": true' in request.parameters():
                ctypes.string_at(0)
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", data)]))
        return responses
