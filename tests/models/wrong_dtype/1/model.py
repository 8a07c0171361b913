"""wrong_dtype: returns OUTPUT0 as FP64 although the configuration says FP32 (sent as FP64, as Triton does)."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", data.astype("float64"))]))
        return responses
