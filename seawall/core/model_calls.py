"""Calls a model's own code makes to the server it runs in: BLS inference and model control (`ModelCalls`).

Imports other `core` modules and `errors`. The server gives one `ServerModelCalls` to every backend through
`ModelLoadContext.calls`; a call goes through the same entry as a client's request (resolve, then run), so
scheduling, batching and statistics apply, but no API restriction (it is internal). Errors carry Triton's BLS
wording: what fails before the request is queued reads "Model <m> - Error when running inference: <why>".
`infer_stream` serves `exec(decoupled=True)`: a decoupled model's responses as they come, through the same entry.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from seawall.core.served import ServedModel
from seawall.core.types import InferRequest, InferResponse, StreamResponse
from seawall.core.validation import check_request
from seawall.errors import InternalError, SeawallError


class ServerModelCalls:
    """The server side of `core.backend.ModelCalls`, over the facade's own entry points (event loop thread)."""

    def __init__(
        self,
        resolve: Callable[[str, str], ServedModel],
        is_ready: Callable[[str, str], bool],
        load: Callable[[str, str | None, Mapping[str, bytes] | None, str], Awaitable[None]],
        unload: Callable[[str, bool, str], Awaitable[None]],
    ) -> None:
        self._resolve = resolve
        self._is_ready = is_ready
        self._load = load
        self._unload = unload

    async def infer(self, request: InferRequest) -> InferResponse:
        """Raises: SeawallError (INTERNAL for what fails before the request runs, as Triton's BLS answers)."""
        return await self._resolved(request, streamed=False).infer(request)

    async def infer_stream(self, request: InferRequest) -> AsyncIterator[StreamResponse]:
        """The responses of `request` (BLS `exec(decoupled=True)`): every response of a decoupled model, the
        one response of a model that is not (its error as a final error message, as Triton's iterator gives it).

        Raises: SeawallError (before the first message: what fails before the request runs, as `infer`).
        """
        served = self._resolved(request, streamed=True)
        try:
            async for message in served.stream(request):
                yield message
        except SeawallError as error:
            yield StreamResponse(None, error, True)

    def _resolved(self, request: InferRequest, streamed: bool) -> ServedModel:
        """The ready model `request` names, its request checked against it.

        Raises: InternalError ("Model <m> - Error when running inference: <why>", Triton's BLS wording).
        """
        name = request.model_name
        try:
            if not self._is_ready(name, request.model_version):
                raise InternalError(f"Failed for execute the inference request. Model '{name}' is not ready.")
            served = self._resolve(name, request.model_version)
            if served.decoupled and not streamed:
                raise InternalError(
                    f"Model {name} is using the decoupled. The current BLS request call doesn't support models using "
                    "the decoupled transaction policy. Please use 'decoupled=True' argument to the 'exec' or "
                    "'async_exec' calls for decoupled models.'"
                )
            check_request(request, served.spec)
        except SeawallError as error:
            raise InternalError(f"Model {name} - Error when running inference: {error.message}") from None
        return served

    def is_model_ready(self, name: str, version: str) -> bool:
        """False for a model or version the server does not serve (an invalid name included)."""
        try:
            return self._is_ready(name, version)
        except SeawallError:
            return False

    async def load_model(self, name: str, config_json: str, files: Mapping[str, bytes], caller: str) -> None:
        """Raises: SeawallError (as the repository API's load)."""
        await self._load(name, config_json or None, files or None, caller)

    async def unload_model(self, name: str, unload_dependents: bool, caller: str) -> None:
        """Raises: SeawallError (as the repository API's unload)."""
        await self._unload(name, unload_dependents, caller)
