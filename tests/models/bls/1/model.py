"""bls: calls another model through BLS (`InferenceRequest.exec`), as the request's parameters say.

Parameters: `target` (model, default add_sub), `version`, `bls_timeout_us`, `outputs` (comma-separated
requested outputs), `rename` ("FROM:TO", an input renamed on the way), `batch` (add a leading dimension of 1),
`drop` (comma-separated inputs not passed on), `inplace` (add 1 to the outputs in place), `big_mib` (send a
tensor of that many MiB instead), `inner_<name>` (parameter <name> of the inner request), `mode` (infer, ready,
load, unload, decoupled, twice, init: the error a BLS call from initialize() raised, bad: the exception of the bad
argument `bad` names).
Answers the callee's OUTPUT0 and OUTPUT1 (flattened), or an error response "code=<c> message=<m>" with the
callee's error, so tests see exactly what the call returned.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

BAD = {
    "none_input": {"inputs": [None]},
    "empty_output": {"requested_output_names": [""]},
    "correlation": {"correlation_id": 1.5},
    "float_parameter": {"parameters": {"x": 1.5}},
}


def _error(text):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(text))


class TritonPythonModel:
    def initialize(self, args):
        try:  # BLS is refused outside execute(): the message is kept for mode "init"
            pb_utils.InferenceRequest(model_name="add_sub", requested_output_names=[], inputs=[]).exec()
            self.init_error = "no error"
        except pb_utils.TritonModelException as exc:
            self.init_error = str(exc)

    def execute(self, requests):
        return [self._answer(request) for request in requests]

    def _answer(self, request):
        parameters = json.loads(request.parameters())
        mode = parameters.get("mode", "infer")
        target = parameters.get("target", "add_sub")
        if mode == "init":
            return _error(f"exception: {self.init_error}")
        try:
            if mode == "ready":
                ready = pb_utils.is_model_ready(target, str(parameters.get("version", "")))
                return self._flags(ready)
            if mode == "load":
                pb_utils.load_model(target, config=parameters.get("config", ""))
                return self._flags(True)
            if mode == "unload":
                pb_utils.unload_model(target)
                return self._flags(True)
            if mode == "bad":  # one bad argument of InferenceRequest, named by parameter `bad`
                arguments = {"model_name": target, "requested_output_names": [], "inputs": []}
                arguments.update(BAD[parameters["bad"]])
                pb_utils.InferenceRequest(**arguments).exec()
                return self._flags(True)
            bls_request = self._request(request, parameters, target)
            if mode == "decoupled":
                bls_request.exec(decoupled=True)
                return self._flags(True)
        except pb_utils.TritonModelException as exc:
            return _error(f"exception: {exc}")
        response = bls_request.exec()
        if mode == "twice" and not response.has_error():
            response = bls_request.exec()
        if response.has_error():
            return _error(f"code={response.error().code()} message={response.error().message()}")
        outputs = []
        for name in ("OUTPUT0", "OUTPUT1"):
            tensor = pb_utils.get_output_tensor_by_name(response, name)
            if tensor is not None:
                if parameters.get("inplace"):  # the call's outputs are numpy arrays a model may write into
                    tensor.as_numpy()[...] += 1
                data = tensor.as_numpy().astype(np.float32).reshape(-1)
                if "big_mib" in parameters:  # a summary of the big tensor: size, first, last
                    data = np.array([data.size, data[0], data[-1]], dtype=np.float32)
                outputs.append(pb_utils.Tensor(name, data))
        return pb_utils.InferenceResponse(outputs)

    def _flags(self, value):
        flag = np.array([1.0 if value else 0.0], dtype=np.float32)
        return pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", flag), pb_utils.Tensor("OUTPUT1", flag)])

    def _request(self, request, parameters, target):
        renamed = dict([parameters["rename"].split(":")]) if "rename" in parameters else {}
        dropped = set(parameters.get("drop", "").split(",")) - {""}
        inputs = []
        for tensor in request.inputs():
            if tensor.name() in dropped:
                continue
            data = tensor.as_numpy()
            if parameters.get("batch"):
                data = data.reshape(1, -1)
            inputs.append(pb_utils.Tensor(renamed.get(tensor.name(), tensor.name()), data))
        if "big_mib" in parameters:
            count = int(parameters["big_mib"]) * 1024 * 1024 // 4
            big = np.arange(count, dtype=np.float32).reshape(1, -1)
            inputs = [pb_utils.Tensor("INPUT0", big)]
        inner = {k[len("inner_") :]: v for k, v in parameters.items() if k.startswith("inner_")}
        outputs = [name for name in parameters.get("outputs", "").split(",") if name]
        return pb_utils.InferenceRequest(
            model_name=target,
            requested_output_names=outputs,
            inputs=inputs,
            model_version=int(parameters.get("version", -1)),
            timeout=int(parameters.get("bls_timeout_us", 0)),
            parameters=inner,
        )
