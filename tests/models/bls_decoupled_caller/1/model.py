"""bls_decoupled_caller: a decoupled model that makes BLS calls from execute() and streams what they give. For IN = n:
one response OUT = the first element of add_sub's OUTPUT0 for [n, n, n, n] + [1, 1, 1, 1] (that is n + 1), then
one response per response of square_int32 called with `exec(decoupled=True)` (OUT = 0, ..., n-1; an error
response of the callee goes on as an error response), then the final flag alone. Parameter `thread`: the calls are
made from a thread of the model after execute() returned (its exception, if any, goes to the client as an error
response: in-process models refuse calls from other threads)."""

import json
import threading

import numpy as np
import triton_python_backend_utils as pb_utils

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def _stream(sender, count):
    try:
        x = np.full(4, count, dtype=np.float32)
        inputs = [pb_utils.Tensor("INPUT0", x), pb_utils.Tensor("INPUT1", np.ones(4, dtype=np.float32))]
        unary = pb_utils.InferenceRequest(model_name="add_sub", requested_output_names=["OUTPUT0"], inputs=inputs)
        answer = unary.exec()
        if answer.has_error():
            sender.send(pb_utils.InferenceResponse(error=answer.error()))
        else:
            total = pb_utils.get_output_tensor_by_name(answer, "OUTPUT0").as_numpy()[0]
            sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([total], dtype=np.int32))]))
        call = pb_utils.InferenceRequest(
            model_name="square_int32",
            requested_output_names=["OUT"],
            inputs=[pb_utils.Tensor("IN", np.array([count], dtype=np.int32))],
        )
        for response in call.exec(decoupled=True):
            if response.has_error():
                sender.send(pb_utils.InferenceResponse(error=response.error()))
            elif response.output_tensors():
                out = pb_utils.get_output_tensor_by_name(response, "OUT").as_numpy()
                sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", out)]))
    except Exception as exc:  # e.g. a call from a thread of an in-process model
        sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}")))
    sender.send(flags=FINAL)


class TritonPythonModel:
    def initialize(self, args):
        self.threads = []

    def execute(self, requests):
        for request in requests:
            count = int(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()[0])
            sender = request.get_response_sender()
            if "thread" in json.loads(request.parameters()):
                thread = threading.Thread(target=_stream, args=(sender, count))
                thread.start()
                self.threads.append(thread)
            else:
                _stream(sender, count)
        return None

    def finalize(self):
        for thread in self.threads:
            thread.join(timeout=5)
