"""slow: sleeps `sleep_ms` (request parameter) per request, then echoes INPUT0.

REQUEST is a JSON text describing what the model saw (id, correlation id, flags, parameters, requested
outputs); a `log` parameter is written to the server log through pb_utils.Logger.
"""

import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.args = args

    def execute(self, requests):
        responses = []
        for request in requests:
            parameters = json.loads(request.parameters())
            if "log" in parameters:  # before the sleep: a test may wait for it to know the request is executing
                pb_utils.Logger.log_warn(parameters["log"])
            time.sleep(parameters.get("sleep_ms", 0) / 1000)
            seen = {
                "id": request.request_id(),
                "correlation_id": request.correlation_id(),
                "flags": request.flags(),
                "parameters": parameters,
                "requested": request.requested_output_names(),
                "instance": self.args["model_instance_name"],
                "args": sorted(self.args),
                "config_name": json.loads(self.args["model_config"])["name"],
            }
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            batch = data.shape[0]
            text = np.array([[json.dumps(seen).encode()]] * batch, dtype=np.object_)
            responses.append(
                pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", data), pb_utils.Tensor("REQUEST", text)])
            )
        return responses
