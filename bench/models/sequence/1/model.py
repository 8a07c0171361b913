"""sequence: the bench's sequence model (direct strategy), a running sum of INPUT per sequence (CORRID), reset by
START and dropped at END; slots without a request (READY 0) are skipped."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.sums = {}

    def execute(self, requests):
        responses = []
        for request in requests:
            value = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
            start = pb_utils.get_input_tensor_by_name(request, "START").as_numpy()
            end = pb_utils.get_input_tensor_by_name(request, "END").as_numpy()
            ready = pb_utils.get_input_tensor_by_name(request, "READY").as_numpy()
            corrid = pb_utils.get_input_tensor_by_name(request, "CORRID").as_numpy()
            out = np.zeros(value.shape, dtype=np.int32)
            for row in range(value.shape[0]):
                if not ready[row, 0]:
                    continue
                key = int(corrid[row, 0])
                total = (0 if start[row, 0] else self.sums.get(key, 0)) + int(value[row, 0])
                if end[row, 0]:
                    self.sums.pop(key, None)
                else:
                    self.sums[key] = total
                out[row, 0] = total
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT", out)]))
        return responses
