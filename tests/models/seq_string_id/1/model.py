"""seq_string_id: a sequence model with a STRING CORRID control input. ID is the CORRID tensor it was given, FLAGS
the request's (correlation id given as int or str → 1 or 2, flags())."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            corrid = pb_utils.get_input_tensor_by_name(request, "CORRID").as_numpy()
            kind = 2 if isinstance(request.correlation_id(), str) else 1
            flags = np.array([kind, request.flags()], dtype=np.int32)
            ids = np.array([corrid.reshape(-1)[0]], dtype=np.object_)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("ID", ids), pb_utils.Tensor("FLAGS", flags)]))
        return responses
