"""stream_100: a decoupled model that answers COUNT responses (OUT = 0, 1, ...) per request, then the final flag,
as a token-by-token generator does. The streaming benchmark (bench/streaming.py) asks for 100."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            count = int(pb_utils.get_input_tensor_by_name(request, "COUNT").as_numpy()[0])
            for index in range(count):
                out = pb_utils.Tensor("OUT", np.array([index], dtype=np.int32))
                sender.send(pb_utils.InferenceResponse([out]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
