"""seq_state: a running sum kept in Triton's implicit state, not in the model. The server hands the state in as
STATE_IN (zeros at the start of a sequence) and keeps STATE_OUT for the next request of the sequence; OUTPUT is
INPUT + STATE_IN."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            value = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
            state = pb_utils.get_input_tensor_by_name(request, "STATE_IN").as_numpy()
            total = (value + state).astype(value.dtype)
            outputs = [pb_utils.Tensor("OUTPUT", total), pb_utils.Tensor("STATE_OUT", total)]
            responses.append(pb_utils.InferenceResponse(outputs))
        return responses
