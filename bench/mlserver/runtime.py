"""MLServer runtimes equivalent to the Python-backend models in bench/models (run by MLServer, in its own venv)."""

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class AddSub(MLModel):
    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        in0 = NumpyCodec.decode_input(payload.inputs[0])
        in1 = NumpyCodec.decode_input(payload.inputs[1])
        outputs = [NumpyCodec.encode_output("OUTPUT0", in0 + in1), NumpyCodec.encode_output("OUTPUT1", in0 - in1)]
        return InferenceResponse(model_name=self.name, outputs=outputs)


class Identity(MLModel):
    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        data = NumpyCodec.decode_input(payload.inputs[0])
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("OUTPUT0", data)])


class MatMul(MLModel):
    async def load(self) -> bool:
        self._weights = np.random.default_rng(0).standard_normal((256, 256), dtype=np.float32)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        rows = NumpyCodec.decode_input(payload.inputs[0])
        product = rows @ self._weights
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("OUTPUT0", product)])
