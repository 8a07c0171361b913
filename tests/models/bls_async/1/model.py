"""bls_async: an `async def execute` model that calls another model with `await InferenceRequest.async_exec()`.

Parameters: `target` (default add_sub), `calls` (how many calls at once, with asyncio.gather; default 1),
`barrier` (wait, after the calls, until that many requests are inside execute() at once: proves that
concurrent requests overlap their awaits; an error response after 20 s if they never do), `inner_<name>`
(parameter <name> of the inner requests), `raise` (execute raises ValueError). Answers the sum of the calls'
OUTPUT0 and their OUTPUT1, or an error response "code=<c> message=<m>".
"""

import asyncio
import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.inside = 0
        self.arrived = None

    async def execute(self, requests):
        return [await self._answer(request) for request in requests]

    async def _answer(self, request):
        parameters = json.loads(request.parameters())
        if parameters.get("raise"):
            raise ValueError("boom")
        inputs = [pb_utils.Tensor(t.name(), t.as_numpy()) for t in request.inputs()]
        inner = {k[len("inner_") :]: v for k, v in parameters.items() if k.startswith("inner_")}
        calls = [
            pb_utils.InferenceRequest(
                model_name=parameters.get("target", "add_sub"),
                requested_output_names=[],
                inputs=inputs,
                parameters=inner,
            ).async_exec()
            for _ in range(int(parameters.get("calls", 1)))
        ]
        responses = await asyncio.gather(*calls)
        if "barrier" in parameters and not await self._barrier(int(parameters["barrier"])):
            return pb_utils.InferenceResponse(error=pb_utils.TritonError("requests did not overlap"))
        for response in responses:
            if response.has_error():
                text = f"code={response.error().code()} message={response.error().message()}"
                return pb_utils.InferenceResponse(error=pb_utils.TritonError(text))
        total = sum(pb_utils.get_output_tensor_by_name(r, "OUTPUT0").as_numpy() for r in responses)
        last = pb_utils.get_output_tensor_by_name(responses[-1], "OUTPUT1").as_numpy()
        return pb_utils.InferenceResponse(
            [pb_utils.Tensor("OUTPUT0", np.asarray(total, np.float32)), pb_utils.Tensor("OUTPUT1", last)]
        )

    async def _barrier(self, count):
        if self.arrived is None:
            self.arrived = asyncio.Event()
        self.inside += 1
        if self.inside >= count:
            self.arrived.set()
        try:
            await asyncio.wait_for(self.arrived.wait(), 20)
            return True
        except TimeoutError:
            return False
        finally:
            self.inside -= 1
            if self.inside == 0:
                self.arrived = None
