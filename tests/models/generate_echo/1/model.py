"""generate_echo: text_output = text_input (with " flag" appended when `flag` is true), values_out = 2 * values
(empty when absent), count = the number of request parameters; text_input "fail" gets an INVALID_ARG error."""

import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "text_input").as_numpy()
            if text.reshape(-1)[0] == b"fail":
                error = pb_utils.TritonError("the model refused 'fail'")
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            flag = pb_utils.get_input_tensor_by_name(request, "flag")
            if flag is not None and flag.as_numpy().reshape(-1)[0]:
                text = np.array([[t + b" flag" for t in row] for row in text], dtype=np.object_)
            batch = text.shape[0]
            values = pb_utils.get_input_tensor_by_name(request, "values")
            doubled = values.as_numpy() * 2 if values is not None else np.zeros((batch, 0), dtype=np.float32)
            parameters = json.loads(request.parameters())
            outputs = [
                pb_utils.Tensor("text_output", text),
                pb_utils.Tensor("values_out", doubled.astype(np.float32)),
                pb_utils.Tensor("count", np.full((batch, 1), len(parameters), dtype=np.int32)),
            ]
            responses.append(pb_utils.InferenceResponse(outputs))
        return responses
