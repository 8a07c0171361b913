"""execution_order: echoes INPUT0, numbers the requests in the order execute() saw them (ORDER) and
reports how many requests that execute() call had (BATCH).

The request parameter "sleep_ms" delays the batch, "sys_exit" raises SystemExit; "write_input" tries to
write into INPUT0 and reports whether the model could (OUTPUT0 then holds -1 where it wrote).
"""

import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.count = 0

    def execute(self, requests):
        responses = []
        for request in requests:
            parameters = json.loads(request.parameters())
            if parameters.get("sys_exit"):
                raise SystemExit(3)
            time.sleep(parameters.get("sleep_ms", 0) / 1000)
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            if parameters.get("write_input"):
                try:
                    data[...] = -1
                except ValueError:
                    pass
            self.count += 1
            shape = data.shape[:-1] + (1,)  # [1], or [batch, 1] when the model batches
            order = np.full(shape, self.count, dtype=np.int64)
            batch = np.full(shape, len(requests), dtype=np.int64)
            outputs = [pb_utils.Tensor("OUTPUT0", data.copy()), pb_utils.Tensor("ORDER", order)]
            responses.append(pb_utils.InferenceResponse([*outputs, pb_utils.Tensor("BATCH", batch)]))
        return responses
