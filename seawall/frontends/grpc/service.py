"""The gRPC frontend: Triton's `inference.GRPCInferenceService` and `grpc.health.v1.Health/Check` on grpc.aio.

Imports `core.server`, `core.types`, `errors`, `options`, `security.policy`, `frontends.status` and its
sibling modules (codec, admin conversions, stream).
Every RPC is wrapped by one guard, built in a loop: restriction check, the call, then the one error mapping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from google.protobuf import message_factory
from tritonclient.grpc import service_pb2

import seawall.core.offload as offload
from seawall.core.server import InferenceServer
from seawall.core.types import InferRequest, InferResponse
from seawall.errors import DecoupledModelError, InternalError, SeawallError, UnsupportedError
from seawall.frontends.grpc import admin, codec, wire
from seawall.frontends.grpc.stream import Emit, serve_stream
from seawall.frontends.status import grpc_status
from seawall.options import Limits, Options
from seawall.security.policy import ApiPolicy, Keys

if TYPE_CHECKING:
    from seawall.core.served import ServedModel

logger = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
HEALTH_SERVICE = "grpc.health.v1.Health"
HEALTH_CHECK = f"/{HEALTH_SERVICE}/Check"
#: the only RPC registered with grpc core by name: grpc.aio awaits one pending call per registered method on
#: every call it accepts, so the others go through one generic handler
HOT_RPC = "ModelInfer"
#: RPCs whose handlers take and return serialized messages (`wire`): tensor bytes never enter message objects
_WIRE_RPCS = (HOT_RPC, "ModelStreamInfer")

_RPC_CATEGORY_NAMES = {
    "ServerLive": "health",
    "ServerReady": "health",
    "ModelReady": "health",
    "ServerMetadata": "metadata",
    "ModelMetadata": "metadata",
    "ModelInfer": "inference",
    "ModelStreamInfer": "inference",
    "ModelConfig": "model-config",
    "ModelStatistics": "statistics",
    "RepositoryIndex": "model-repository",
    "RepositoryModelLoad": "model-repository",
    "RepositoryModelUnload": "model-repository",
    "SystemSharedMemoryStatus": "shared-memory",
    "SystemSharedMemoryRegister": "shared-memory",
    "SystemSharedMemoryUnregister": "shared-memory",
    "CudaSharedMemoryStatus": "shared-memory",
    "CudaSharedMemoryRegister": "shared-memory",
    "CudaSharedMemoryUnregister": "shared-memory",
    "TraceSetting": "trace",
    "LogSettings": "logging",
}

#: Full method path → API category (`--grpc-restricted-protocol`) of every RPC the frontend registers.
RPC_CATEGORIES: Mapping[str, str] = {
    **{f"/{SERVICE}/{name}": category for name, category in _RPC_CATEGORY_NAMES.items()},
    HEALTH_CHECK: "health",
}

_FINAL = "triton_final_response"
_EMPTY_FINAL = "triton_enable_empty_final_response"
# grpc.health.v1 ServingStatus values; HealthCheckResponse is one enum field (number 1, varint)
_SERVING, _NOT_SERVING = 1, 2

Call = Callable[[Any, Any], Awaitable[Any]]


def _encode_health(status: int) -> bytes:
    return bytes((0x08, status))


def _ignore_request(data: bytes) -> bytes:
    # the service name of a HealthCheckRequest is ignored, as Triton does
    return data


def _metadata_lookup(context: Any) -> Callable[[str], str | None]:
    metadata = context.invocation_metadata() or ()

    def lookup(name: str) -> str | None:
        for key, value in metadata:
            if key == name and isinstance(value, str):
                return value
        return None

    return lookup


def _model_of(request: Any) -> str:
    if isinstance(request, (bytes, memoryview)):  # the hot path's request: read again only to name the model
        return wire.model_name(request)
    name = getattr(request, "model_name", None) or getattr(request, "name", None)
    return name if isinstance(name, str) else ""


class _Servicer:
    """The RPCs the core implements; each returns a response message or raises SeawallError."""

    def __init__(self, server: InferenceServer, limits: Limits, gathered: bool) -> None:
        self._server = server
        self._limits = limits
        # ModelInfer answers a list of parts (the lean listener writes them as they are), else bytes
        self._encode = wire.infer_response_parts if gathered else wire.infer_response_bytes

    async def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802 (RPC names)
        return service_pb2.ServerLiveResponse(live=self._server.is_live())

    async def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        return service_pb2.ServerReadyResponse(ready=self._server.is_ready())

    async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        # unknown model: OK with ready=false (HTTP answers 400); a bad version string raises
        ready = await self._server.model_ready_checked(request.name, request.version)
        return service_pb2.ModelReadyResponse(ready=ready)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        return codec.server_metadata_to_proto(self._server.server_metadata())

    async def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        return codec.model_metadata_to_proto(self._server.model_metadata(request.name, request.version))

    async def ModelConfig(self, request: Any, context: Any) -> Any:  # noqa: N802
        config = self._server.model_config(request.name, request.version)
        return service_pb2.ModelConfigResponse(config=config)

    async def ModelStatistics(self, request: Any, context: Any) -> Any:  # noqa: N802
        return admin.statistics_to_proto(self._server.model_statistics(request.name, request.version))

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:  # noqa: N802
        _refuse_repository_name(request)
        return admin.repository_index_to_proto(self._server.repository_index(request.ready))

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:  # noqa: N802
        _refuse_repository_name(request)
        config, files = admin.load_parameters(request.parameters, self._limits)
        await self._server.load_model(request.model_name, config, files, caller=_caller(context))
        return service_pb2.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:  # noqa: N802
        _refuse_repository_name(request)
        dependents = admin.unload_dependents(request.parameters)
        await self._server.unload_model(request.model_name, dependents, caller=_caller(context))
        return service_pb2.RepositoryModelUnloadResponse()

    async def LogSettings(self, request: Any, context: Any) -> Any:  # noqa: N802
        changes = admin.log_changes(request.settings)
        if changes:
            settings = self._server.update_log_settings(changes, caller=_caller(context))
        else:
            settings = self._server.log_settings_dict()
        return admin.log_settings_to_proto(settings)

    async def TraceSetting(self, request: Any, context: Any) -> Any:  # noqa: N802
        changes = admin.trace_changes(request.settings)
        model: str = request.model_name
        if changes:
            updated = self._server.update_trace_settings(changes, model, caller=_caller(context))
            return admin.trace_settings_to_proto(updated)
        return admin.trace_settings_to_proto(self._server.get_trace_settings(model))

    async def SystemSharedMemoryStatus(self, request: Any, context: Any) -> Any:  # noqa: N802
        return admin.system_shm_status_to_proto(self._server.system_shared_memory_status(request.name))

    async def SystemSharedMemoryRegister(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._server.register_system_shared_memory(
            request.name, request.key, request.offset, request.byte_size, caller=_caller(context)
        )
        return service_pb2.SystemSharedMemoryRegisterResponse()

    async def SystemSharedMemoryUnregister(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._server.unregister_system_shared_memory(request.name, caller=_caller(context))
        return service_pb2.SystemSharedMemoryUnregisterResponse()

    async def CudaSharedMemoryStatus(self, request: Any, context: Any) -> Any:  # noqa: N802
        return admin.cuda_shm_status_to_proto(self._server.cuda_shared_memory_status(request.name))

    async def CudaSharedMemoryRegister(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._server.register_cuda_shared_memory(request.name, caller=_caller(context))
        return service_pb2.CudaSharedMemoryRegisterResponse()

    async def CudaSharedMemoryUnregister(self, request: Any, context: Any) -> Any:  # noqa: N802
        # no CUDA region can exist, so there is nothing to forget (Triton answers OK for unknown names)
        return service_pb2.CudaSharedMemoryUnregisterResponse()

    async def ModelInfer(self, data: bytes | memoryview, context: Any) -> bytes | list[bytes | memoryview]:  # noqa: N802
        """Serialized request in, serialized response out (in parts for a gathering writer): the tensors are never
        copied into message objects."""
        request, raw_contents, heavy = await self._parse(data)
        response = await self._infer(request, raw_contents, heavy)
        return await offload.run(offload.is_heavy(response.outputs), self._encode, response)

    async def _parse(self, data: bytes | memoryview) -> tuple[Any, Sequence[bytes | memoryview], bool]:
        """A serialized request parsed: the message, its raw contents, and whether decoding them is worth a worker
        thread. A large message is split here (raw contents stay views); only a large remainder (typed contents)
        is parsed in a worker thread, and decoding is heavy for such a message or for large BYTES contents."""
        if len(data) <= offload.HEAVY_BODY_BYTES:
            request, raw_contents = wire.parse_infer_request(data, self._limits)
            return request, raw_contents, False
        header, raw_contents = wire.split_infer_request(data, self._limits)
        heavy = len(header) > offload.HEAVY_BODY_BYTES
        request = await offload.run(heavy, wire.parse_header, header)
        return request, raw_contents, heavy or any(tensor.datatype == "BYTES" for tensor in request.inputs)

    async def _infer(self, request: Any, raw_contents: Any, heavy: bool) -> InferResponse:
        """Run a parsed ModelInferRequest (`heavy`: decode it in a worker thread). As Triton, the model is resolved
        before the inputs are read (an unknown model or bad version wins over bad inputs)."""
        served = await self._server.resolve(request.model_name, request.model_version)
        decoded = await offload.run(heavy, codec.infer_request_from_proto, request, served.limits, raw_contents)
        try:
            return await served.infer(decoded)
        except DecoupledModelError:
            raise UnsupportedError("ModelInfer RPC doesn't support models with decoupled transaction policy") from None

    async def ModelStreamInfer(self, requests: Any, context: Any) -> None:  # noqa: N802
        await serve_stream(requests, context, self._stream_answer)

    async def _stream_answer(self, data: bytes | memoryview, emit: Emit, detach: Callable[[], None]) -> bytes | None:
        """One serialized stream response: the inference response, or its error as `error_message` (the stream
        goes on). A decoupled model's responses are emitted as they come (`_stream_decoupled`); then None."""
        request_id = model = ""
        try:
            request, raw_contents, heavy = await self._parse(data)
            request_id, model = request.id, request.model_name
            served = await self._server.resolve(request.model_name, request.model_version)
            decoded = await offload.run(heavy, codec.infer_request_from_proto, request, served.limits, raw_contents)
            if served.decoupled:
                detach()
                await self._stream_decoupled(served, decoded, emit)
                return None
            response = await served.infer(decoded)
        except Exception as exc:  # the one error layer decides
            message = _as_error(exc, "ModelStreamInfer request", lambda: model).message
        else:
            # Triton marks every response of a stream, decoupled or not
            parameters = {**response.parameters, _FINAL: True}
            return await offload.run(
                offload.is_heavy(response.outputs), wire.stream_response_bytes, response, parameters
            )
        return _stream_error(message, request_id)

    async def _stream_decoupled(self, served: ServedModel, request: InferRequest, emit: Emit) -> None:
        """Emit each message of a decoupled model's stream as Triton 2.51 writes it: every response carries
        `triton_final_response`; the final flag alone becomes an empty response (model name, id and that
        parameter, no version) only when the request asked for it (`triton_enable_empty_final_response`); an
        error is a message with `error_message` and such an empty response. Once the client has gone, the
        stream is closed, which cancels the request."""
        empty_final = request.parameters.get(_EMPTY_FINAL) is True
        first = True
        try:
            async with contextlib.aclosing(served.stream(request)) as messages:
                async for message in messages:
                    if message.error is not None:
                        error = _as_error(message.error, "ModelStreamInfer request", lambda: request.model_name)
                        sent = await emit(_stream_error(error.message, request.id, request.model_name, message.final))
                    elif message.response is not None:
                        response = message.response
                        parameters = {**response.parameters, _FINAL: message.final}
                        heavy = offload.is_heavy(response.outputs)
                        sent = await emit(await offload.run(heavy, wire.stream_response_bytes, response, parameters))
                    elif empty_final:
                        empty = InferResponse(request.model_name, "", [], request.id)
                        sent = await emit(wire.stream_response_bytes(empty, {_FINAL: True}))
                    else:
                        sent = True
                    if not sent:
                        return  # the client is gone: closing the stream cancels the request
                    if first:  # the writer sends the first response now, not after the burst that came with it
                        first = False
                        await asyncio.sleep(0)
        except Exception as exc:  # raised before any message: the request's own error
            error = _as_error(exc, "ModelStreamInfer request", lambda: request.model_name)
            await emit(_stream_error(error.message, request.id))

    async def health_check(self, request: Any, context: Any) -> int:
        return _SERVING if self._server.is_ready() else _NOT_SERVING


def _stream_error(message: str, request_id: str, model: str = "", final: bool | None = None) -> bytes:
    """A stream message holding an error; a decoupled model's also names the model and carries the final flag."""
    response = service_pb2.ModelInferResponse(id=request_id, model_name=model)
    if final is not None:
        response.parameters[_FINAL].bool_param = final
    error = service_pb2.ModelStreamInferResponse(error_message=message, infer_response=response)
    return bytes(error.SerializeToString())


def _refuse_repository_name(request: Any) -> None:
    if request.repository_name:
        raise UnsupportedError("'repository_name' specification is not supported")


def _not_supported(name: str) -> Call:
    async def call(request: Any, context: Any) -> Any:
        raise UnsupportedError(f"{name} is not supported yet")

    return call


def _guard(path: str, category: str, policy: ApiPolicy, call: Call) -> Call:
    """Wrap `call`: restriction check first, then the call; errors become a gRPC status in this one place."""
    is_restricted = policy.is_restricted(category)  # decided once, not per call

    async def guarded(request: Any, context: Any) -> Any:
        try:
            if is_restricted:
                policy.authorize(category, _metadata_lookup(context))
            return await call(request, context)
        except Exception as exc:  # the one error layer decides
            error = _as_error(exc, path, lambda: _model_of(request))
        await context.abort(grpc_status(error.code), error.message)

    return guarded


def _as_error(exc: Exception, path: str, model: Callable[[], str]) -> SeawallError:
    """The one error layer of the gRPC frontend (each RPC through `_guard`, each stream request): a SeawallError
    is answered as it is (logged at DEBUG), anything else is logged with its traceback and answered as an
    internal error without detail. Call it from the `except` block."""
    if isinstance(exc, SeawallError):
        if logger.isEnabledFor(logging.DEBUG):  # naming the model may parse a serialized request again
            logger.debug("%s refused for model %r: %r", path, model(), exc.message)
        return exc
    logger.exception("%s failed for model %r", path, model())
    return InternalError("internal error")


def build_handlers(
    server: InferenceServer, options: Options, keys: Keys | None = None, gathered: bool = False
) -> dict[str, dict[str, Any]]:
    """Service name → {method name → RpcMethodHandler}, every method guarded. `gathered`: ModelInfer answers
    the parts of its serialized response (for a listener that writes them as they are, without joining them).

    Raises:
        KeyError: a method of the service has no category in RPC_CATEGORIES.
    """
    servicer = _Servicer(server, options.limits, gathered)
    restrictions = keys if keys is not None else options.grpc.restricted  # `keys`: live when key files rotate
    policy = ApiPolicy(restrictions, header_prefix="triton-grpc-protocol-", noun="protocol")
    descriptor = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    methods: dict[str, Any] = {}
    for method in descriptor.methods:
        path = f"/{SERVICE}/{method.name}"
        call = getattr(servicer, method.name, None) or _not_supported(method.name)
        guarded = _guard(path, RPC_CATEGORIES[path], policy, call)
        request_type = message_factory.GetMessageClass(method.input_type)
        response_type = message_factory.GetMessageClass(method.output_type)
        make = grpc.stream_stream_rpc_method_handler if method.client_streaming else grpc.unary_unary_rpc_method_handler
        if method.name in _WIRE_RPCS:
            methods[method.name] = make(guarded)  # bytes both ways
            continue
        methods[method.name] = make(
            guarded,
            request_deserializer=request_type.FromString,
            response_serializer=response_type.SerializeToString,
        )
    health = grpc.unary_unary_rpc_method_handler(
        _guard(HEALTH_CHECK, RPC_CATEGORIES[HEALTH_CHECK], policy, servicer.health_check),
        request_deserializer=_ignore_request,
        response_serializer=_encode_health,
    )
    return {SERVICE: methods, HEALTH_SERVICE: {"Check": health}}


def _caller(context: Any) -> str:
    """Who is calling, for the audit log: the peer and, with mutual TLS, the client certificate subject."""
    text = f"peer={context.peer()}"
    subjects = context.auth_context().get("x509_subject", [])
    if subjects:
        text += f" subject={subjects[0].decode(errors='replace')}"
    return text
