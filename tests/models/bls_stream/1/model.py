"""bls_stream: calls another model with `exec(decoupled=True)` / `async_exec(decoupled=True)` and reports, as JSON
in REPORT, every response the iterator gave: `{"outputs": {name: values}, "error": [code, message] or null}`.

Its inputs go on to the callee as they are. Parameters: `target` (default square_int32), `mode`:
  sync         for response in request.exec(decoupled=True)
  async_await  it = await request.async_exec(decoupled=True), then `for` (as Triton's examples do)
  async_for    it = await request.async_exec(decoupled=True), then `async for`
  twice        iterates the finished iterator again (`again`: what the second pass gave)
  cancel       cancel() right after exec (the callee may not even have the request yet), then iterates
  cancel_after_first  takes the first response, cancel(), then iterates the rest
  drop         takes the first response and drops the iterator
  unary        request.exec() (no decoupled): one response
and `inner_<name>`: parameter <name> of the inner request; `summary`: each output as [size, first, last].
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils


def _values(array, summary):
    flat = array.reshape(-1)
    return [flat.size, flat[0].item(), flat[-1].item()] if summary and flat.size else flat.tolist()


def _entry(response, summary=False):
    error = response.error()
    outputs = {t.name(): _values(t.as_numpy(), summary) for t in response.output_tensors()}
    return {"outputs": outputs, "error": None if error is None else [int(error.code()), error.message()]}


class TritonPythonModel:
    async def execute(self, requests):
        return [await self._answer(request) for request in requests]

    async def _answer(self, request):
        parameters = json.loads(request.parameters())
        mode = parameters.get("mode", "sync")
        inner = {k[len("inner_") :]: v for k, v in parameters.items() if k.startswith("inner_")}
        bls = pb_utils.InferenceRequest(
            model_name=parameters.get("target", "square_int32"),
            inputs=request.inputs(),
            requested_output_names=[],
            parameters=inner,
        )
        report = {}
        if mode == "unary":
            report["responses"] = [_entry(bls.exec())]
        elif mode == "sync" or mode == "twice":
            responses = bls.exec(decoupled=True)
            report["responses"] = [_entry(r, "summary" in parameters) for r in responses]
            if mode == "twice":
                report["again"] = [_entry(r) for r in responses]
        elif mode == "async_await":
            responses = await bls.async_exec(decoupled=True)
            report["responses"] = [_entry(r) for r in responses]
        elif mode == "async_for":
            responses = await bls.async_exec(decoupled=True)
            report["responses"] = [_entry(r) async for r in responses]
        elif mode == "cancel":
            responses = bls.exec(decoupled=True)
            responses.cancel()
            report["responses"] = [_entry(r) for r in responses]
        elif mode == "cancel_after_first":
            responses = bls.exec(decoupled=True)
            first = next(responses)
            responses.cancel()
            report["responses"] = [_entry(first), *(_entry(r) for r in responses)]
        elif mode == "drop":
            report["responses"] = [_entry(next(iter(bls.exec(decoupled=True))))]
        text = json.dumps(report).encode()
        return pb_utils.InferenceResponse([pb_utils.Tensor("REPORT", np.array([text], dtype=object))])
