"""ens_post: the post-processing step of the test ensembles, OUTPUT0 = INPUT0 - 3 and LABEL "sum=<sum>"."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            labels = np.array([[f"sum={row.sum():g}".encode()] for row in data], dtype=np.object_)
            outputs = [pb_utils.Tensor("OUTPUT0", data - 3), pb_utils.Tensor("LABEL", labels)]
            responses.append(pb_utils.InferenceResponse(outputs))
        return responses
