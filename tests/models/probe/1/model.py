"""probe: answers INFO, a JSON text of what this instance saw: its name and kind, and for every request so far
(warmup included) each input's shape, dtype and first values. OUTPUT0, when configured, is INPUT0 in the
model-facing shape of OUTPUT0 (its `reshape`, if any). A `sleep_ms` request parameter makes it sleep first;
the config parameter `fail_first` makes its first execute raise.
"""

import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.args = args
        self.config = json.loads(args["model_config"])
        self.seen = []
        self.fail_first = "fail_first" in self.config.get("parameters", {})

    def execute(self, requests):
        if self.fail_first:
            self.fail_first = False
            raise pb_utils.TritonModelException("warmup boom")
        responses = []
        batching = self.config["max_batch_size"] > 0
        for request in requests:
            parameters = json.loads(request.parameters())
            time.sleep(parameters.get("sleep_ms", 0) / 1000)
            shapes = {}
            for spec in self.config["input"]:
                tensor = pb_utils.get_input_tensor_by_name(request, spec["name"])
                if tensor is None:
                    continue
                data = tensor.as_numpy()
                first = data.ravel()[:4]
                values = [v.decode("latin-1") for v in first] if data.dtype == np.object_ else first.tolist()
                shapes[spec["name"]] = [list(data.shape), str(data.dtype), values]
            self.seen.append(shapes)
            info = {
                "instance": self.args["model_instance_name"],
                "kind": self.args["model_instance_kind"],
                "seen": self.seen,
            }
            tensors = [pb_utils.Tensor("INFO", np.array([json.dumps(info).encode()], dtype=np.object_))]
            for spec in self.config["output"]:
                if spec["name"] == "OUTPUT0":
                    data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
                    shape = spec.get("reshape", {"shape": spec["dims"]})["shape"]
                    shape = [data.shape[0], *shape] if batching else shape
                    tensors.append(pb_utils.Tensor("OUTPUT0", data.reshape([d if d > 0 else -1 for d in shape])))
            responses.append(pb_utils.InferenceResponse(tensors))
        return responses
