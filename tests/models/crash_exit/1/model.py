"""crash_exit: os._exit(1) when the request parameter "exit" is true; with "exit_later_ms" the process
exits that long after answering (the server must notice while the instance is idle); echoes otherwise."""

import json
import os
import threading
import time

import triton_python_backend_utils as pb_utils


def _exit_later(delay_ms):
    time.sleep(delay_ms / 1000)
    os._exit(3)


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            parameters = json.loads(request.parameters())
            if parameters.get("exit"):
                os._exit(1)
            if "exit_later_ms" in parameters:
                threading.Thread(target=_exit_later, args=(parameters["exit_later_ms"],), daemon=True).start()
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", data)]))
        return responses
