"""error_codes: CODE names a pb_utils.TritonError code (by the class constants' order); the response carries that
error. A CODE outside 0-7 answers OUT = CODE."""

import triton_python_backend_utils as pb_utils

NAMES = ("UNKNOWN", "INTERNAL", "NOT_FOUND", "INVALID_ARG", "UNAVAILABLE", "UNSUPPORTED", "ALREADY_EXISTS", "CANCELLED")


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "CODE").as_numpy()
            index = int(data[0])
            if 0 <= index < len(NAMES):
                code = getattr(pb_utils.TritonError, NAMES[index])
                error = pb_utils.TritonError(f"error {NAMES[index]}", code)
                responses.append(pb_utils.InferenceResponse(error=error))
            else:
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", data)]))
        return responses
