"""string_identity: OUTPUT0 = INPUT0 (BYTES), LENGTH = the byte length of each element."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            strings = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            lengths = np.array([len(s) for s in strings.reshape(-1)], dtype=np.int32).reshape(strings.shape)
            responses.append(
                pb_utils.InferenceResponse(
                    [pb_utils.Tensor("OUTPUT0", strings), pb_utils.Tensor("LENGTH", lengths)]
                )
            )
        return responses
