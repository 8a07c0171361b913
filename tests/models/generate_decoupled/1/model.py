"""generate_decoupled: for `repeat` = n >= 0, n responses (text_output = text_input, index = i), then a final
flag alone; n < 0: one response, then an error response (INVALID_ARG), then the final flag. A `sleep_ms` request
parameter waits that long before each response; a cancelled request stops early, as Triton's docs show."""

import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils


def _response(text, index):
    return pb_utils.InferenceResponse(
        [
            pb_utils.Tensor("text_output", np.array([text], dtype=np.object_)),
            pb_utils.Tensor("index", np.array([index], dtype=np.int32)),
        ]
    )


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            text = pb_utils.get_input_tensor_by_name(request, "text_input").as_numpy()[0]
            repeat = int(pb_utils.get_input_tensor_by_name(request, "repeat").as_numpy()[0])
            sleep = json.loads(request.parameters()).get("sleep_ms", 0) / 1000
            if repeat < 0:
                sender.send(_response(text, 0))
                error = pb_utils.TritonError("the model refused a negative repeat")
                sender.send(pb_utils.InferenceResponse(error=error))
            for index in range(max(repeat, 0)):
                if sender.is_cancelled():
                    break
                time.sleep(sleep)
                sender.send(_response(text, index))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
