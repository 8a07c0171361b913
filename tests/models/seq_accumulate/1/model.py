"""seq_accumulate: a sequence model that keeps a running sum per sequence, driven by its control inputs only.

START (int32 0/1) resets the sum of the sequence whose CORRID (uint64) the request carries, READY (bool) says the
slot holds a request, END (fp32 0/1) drops the sum. OUTPUT is the sum so far, CONTROLS the (START, END, READY) values
the model saw, ID the correlation id. An INPUT of -1 is answered with an error.
"""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.sums = {}

    def execute(self, requests):
        responses = []
        for request in requests:
            value = int(pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy().reshape(-1)[0])
            start = float(pb_utils.get_input_tensor_by_name(request, "START").as_numpy().reshape(-1)[0])
            end = float(pb_utils.get_input_tensor_by_name(request, "END").as_numpy().reshape(-1)[0])
            ready = bool(pb_utils.get_input_tensor_by_name(request, "READY").as_numpy().reshape(-1)[0])
            corrid = int(pb_utils.get_input_tensor_by_name(request, "CORRID").as_numpy().reshape(-1)[0])
            if value == -1:
                error = pb_utils.TritonError("INPUT -1 is refused", pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            if start:
                self.sums[corrid] = 0
            total = self.sums.get(corrid, 0) + value
            self.sums[corrid] = total
            if end:
                self.sums.pop(corrid, None)
            outputs = [
                pb_utils.Tensor("OUTPUT", np.array([[total]], dtype=np.int32)),
                pb_utils.Tensor("CONTROLS", np.array([[start, end, float(ready)]], dtype=np.float32)),
                pb_utils.Tensor("ID", np.array([[corrid]], dtype=np.uint64)),
            ]
            responses.append(pb_utils.InferenceResponse(outputs))
        return responses
