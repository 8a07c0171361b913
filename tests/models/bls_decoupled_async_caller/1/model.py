"""bls_decoupled_async_caller: bls_decoupled_caller with `async def execute` (Triton runs it in the background) and
`await request.async_exec()` / `await request.async_exec(decoupled=True)`: for IN = n, OUT = n + 1 (add_sub), then
OUT = 0, ..., n-1 (square_int32's stream), then the final flag alone; the callee's errors as error responses."""

import numpy as np
import triton_python_backend_utils as pb_utils

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


class TritonPythonModel:
    async def execute(self, requests):
        for request in requests:
            await self._stream(request.get_response_sender(), request)
        return None

    async def _stream(self, sender, request):
        try:
            count = int(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()[0])
            x = np.full(4, count, dtype=np.float32)
            inputs = [pb_utils.Tensor("INPUT0", x), pb_utils.Tensor("INPUT1", np.ones(4, dtype=np.float32))]
            unary = pb_utils.InferenceRequest(model_name="add_sub", requested_output_names=["OUTPUT0"], inputs=inputs)
            answer = await unary.async_exec()
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
            for response in await call.async_exec(decoupled=True):
                if response.has_error():
                    sender.send(pb_utils.InferenceResponse(error=response.error()))
                elif response.output_tensors():
                    out = pb_utils.get_output_tensor_by_name(response, "OUT").as_numpy()
                    sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", out)]))
        except Exception as exc:
            sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}")))
        sender.send(flags=FINAL)
