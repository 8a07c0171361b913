"""ens_decoupled: a decoupled model (two responses per request, INPUT0 then INPUT0 * 2), the streaming step of
the es_* ensembles (tests/ensembles.py)."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            sender = request.get_response_sender()
            sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", data)]))
            sender.send(
                pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", data * 2)]),
                flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
            )
        return None
