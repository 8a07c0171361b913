"""error_codes: CODE names a pb_utils.TritonError code (by the class constants' order); the response carries that
error. CODE 8: OUT = CODE with response parameters; 9: parameters pb_utils refuses (execute raises); 10: more
parameters than the server sends; any other: OUT = CODE."""

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
            elif index == 8:
                parameters = {"p_str": "x\ny", "p_int": 7, "p_bool": True, "p_float": 0.5}
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", data)], parameters=parameters))
            elif index == 9:
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", data)], parameters={"a": [1]}))
            elif index == 10:
                parameters = {f"p{i}": i for i in range(65)}
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", data)], parameters=parameters))
            else:
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", data)]))
        return responses
