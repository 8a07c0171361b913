"""ens_model: the middle step of the test ensembles, OUTPUT0 = INPUT0 + 1; a negative sum is the model's
INVALID_ARG error "negative input to ens_model"."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            if data.sum() < 0:
                error = pb_utils.TritonError("negative input to ens_model", pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
            else:
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", data + 1)]))
        return responses
