"""keep_inputs: keeps what it was given across calls, as a model that caches or accumulates its inputs does.

Request parameters: "keep" = "<how>:<key>" keeps this request's input under `key`, `how` being "array" (the array
of as_numpy()), "slice" (a view of all but its first element), "request" (the request object), "tensor" (the
pb_utils.Tensor) or "list" (appended to a list under `key` that only grows); "recall" = `key` answers OUT with what
is kept under `key` (a list: its arrays concatenated), else OUT is IN (a view of it); "drop" = true forgets
everything kept; "raise" = true raises once the request's input is kept. REGIONS: the inode numbers of the input
regions mapped in this stub (the memfd mappings named for inputs in /proc/self/maps), sorted.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.kept = {}

    def execute(self, requests):
        responses = []
        for request in requests:
            parameters = json.loads(request.parameters())
            tensor = pb_utils.get_input_tensor_by_name(request, "IN")
            if parameters.get("drop"):
                self.kept.clear()
            if "keep" in parameters:
                self._keep(parameters["keep"], request, tensor)
            if parameters.get("raise"):
                raise ValueError("asked to raise")
            out = self._recall(parameters["recall"]) if "recall" in parameters else tensor.as_numpy()
            regions = pb_utils.Tensor("REGIONS", _input_regions())
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", out), regions]))
        return responses

    def _keep(self, what, request, tensor):
        how, key = what.split(":")
        if how == "list":
            self.kept.setdefault(key, []).append(tensor.as_numpy())
        else:
            kept = {"array": tensor.as_numpy(), "slice": tensor.as_numpy()[1:], "request": request, "tensor": tensor}
            self.kept[key] = kept[how]

    def _recall(self, key):
        kept = self.kept[key]
        if isinstance(kept, list):
            return np.concatenate(kept)
        if isinstance(kept, pb_utils.Tensor):
            return kept.as_numpy()
        if isinstance(kept, np.ndarray):
            return kept
        return pb_utils.get_input_tensor_by_name(kept, "IN").as_numpy()


def _input_regions():
    with open("/proc/self/maps") as maps:
        lines = [line.split() for line in maps]
    found = {int(f[4]) for f in lines if len(f) > 5 and f[5] == "/memfd:seawall-python-backend-inputs"}
    return np.array(sorted(found), dtype=np.int64)
