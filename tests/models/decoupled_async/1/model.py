"""decoupled_async: a decoupled model whose execute is `async def`; Triton runs it in the background, so one
instance executes the next batch while an earlier execute still awaits. The request's `mode` parameter:
  wait     logs "decoupled_async: waiting", awaits (up to 30 s) a "release" request, then answers OUT = IN
  release  releases the waiting requests, answers OUT = IN
  raise    raises after its first response (the server logs it; the sender, dropped, ends the stream)
"""

import asyncio
import json

import numpy as np
import triton_python_backend_utils as pb_utils

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


class TritonPythonModel:
    def initialize(self, args):
        self.released = None  # an asyncio.Event of the loop execute runs on

    async def execute(self, requests):
        if self.released is None:
            self.released = asyncio.Event()
        for request in requests:
            mode = json.loads(request.parameters()).get("mode", "release")
            sender = request.get_response_sender()
            value = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            out = pb_utils.InferenceResponse([pb_utils.Tensor("OUT", value.astype(np.int32))])
            if mode == "wait":
                pb_utils.Logger.log_warn("decoupled_async: waiting")
                await asyncio.wait_for(self.released.wait(), 30)
            elif mode == "release":
                self.released.set()
            elif mode == "raise":
                sender.send(out)
                raise ValueError("the async model raised on purpose")
            sender.send(out, flags=FINAL)
        return None
