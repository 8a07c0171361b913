"""ready_flag: a model with its own `is_ready()`. A request sets what is_ready() does next (OUT = IN):
  0  True        1  False        2  raises        3  returns "yes" (not a bool)        4  takes 8 s, then True
With the parameter `async` in its config, is_ready is `async def`."""

import asyncio
import json
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.state = 0
        config = json.loads(args["model_config"])
        self.use_async = "async" in config.get("parameters", {})

    def execute(self, requests):
        responses = []
        for request in requests:
            value = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            self.state = int(value[0])
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", value)]))
        return responses

    def is_ready(self):
        if self.use_async:
            return self._answer_async()
        return self._answer()

    async def _answer_async(self):
        await asyncio.sleep(0)
        return self._answer()

    def _answer(self):
        state = self.state
        if state == 2:
            raise RuntimeError("is_ready raised on purpose")
        if state == 3:
            return "yes"
        if state == 4:
            time.sleep(8)
        return state != 1
