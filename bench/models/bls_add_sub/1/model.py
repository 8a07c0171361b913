"""Benchmark bls_add_sub: a BLS pipeline of one step, add_sub called from model code (`InferenceRequest.exec`);
runs unchanged on Triton and Seawall, so the cost of a call from a model is measured beside add_sub itself."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            call = pb_utils.InferenceRequest(
                model_name="add_sub", requested_output_names=["OUTPUT0", "OUTPUT1"], inputs=request.inputs()
            )
            response = call.exec()
            if response.has_error():
                responses.append(pb_utils.InferenceResponse(error=response.error()))
            else:
                responses.append(pb_utils.InferenceResponse(output_tensors=response.output_tensors()))
        return responses
