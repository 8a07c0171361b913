"""ens_branch_a: one parallel branch of the test diamond ensemble: sleeps `sleep_ms` (config parameter),
then OUTPUT0 = INPUT0 + 10 and TIMES = [start, end] of its execution (wall clock, seconds)."""

import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        parameters = json.loads(args["model_config"])["parameters"]
        self.sleep = int(parameters["sleep_ms"]["string_value"]) / 1000

    def execute(self, requests):
        start = time.time()
        time.sleep(self.sleep)
        times = np.array([start, time.time()], dtype=np.float64)
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            batch_times = np.tile(times, (data.shape[0], 1))
            outputs = [pb_utils.Tensor("OUTPUT0", data + 10), pb_utils.Tensor("TIMES", batch_times)]
            responses.append(pb_utils.InferenceResponse(outputs))
        return responses
