"""hold: logs "hold <model>: started <request id>" when a request starts executing, then holds it for `hold_ms`
(request parameter) and answers OUT = IN. Tests wait for the log line to know a request is executing."""

import json
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_name"]

    def execute(self, requests):
        responses = []
        for request in requests:
            pb_utils.Logger.log_warn(f"hold {self.name}: started {request.request_id()}")
            time.sleep(json.loads(request.parameters()).get("hold_ms", 0) / 1000)
            value = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", value)]))
        return responses
