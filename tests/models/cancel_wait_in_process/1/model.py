"""cancel_wait: a model that is not decoupled. Its execute() waits (up to 30 s) until the request's client goes
away, then logs what request.is_cancelled() said and the request's id, and answers OUT = IN. A request whose id
starts with "quick" is answered at once (and logged as executed)."""

import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            if request.request_id().startswith("quick"):
                pb_utils.Logger.log_warn(f"cancel_wait: executed {request.request_id()}")
            else:
                deadline = time.monotonic() + 30
                while not request.is_cancelled() and time.monotonic() < deadline:
                    time.sleep(0.01)
                pb_utils.Logger.log_warn(
                    f"cancel_wait: {request.request_id()} request.is_cancelled()={request.is_cancelled()}"
                )
            value = pb_utils.get_input_tensor_by_name(request, "IN")
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", value.as_numpy())]))
        return responses
