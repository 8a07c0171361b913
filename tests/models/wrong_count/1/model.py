"""wrong_count: returns one response more than there are requests."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([]) for _ in range(len(requests) + 1)]
