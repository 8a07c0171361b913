"""A canned gRPC server of one candidate stack: ModelInfer answers every call with a fixed reply (small) or
echoes the request (large), doing no other work, so that the CPU it uses is the stack's own cost per call.

    python -m bench.grpc_candidates.canned KIND PORT

KIND: aio (grpc.aio, grpc's default experiments), aio-exp (grpc.aio with the GRPC_EXPERIMENTS `seawall` sets),
sync (grpc's thread-pool server, 8 threads), h2 (the `h2` library on uvloop), lean (seawall's own framing,
seawall/frontends/grpc/http2.py, on uvloop). Prints "ready" when serving.
"""

from __future__ import annotations

import asyncio
import os
import sys

PATH = "/inference.GRPCInferenceService/ModelInfer"
SMALL_AT = 4096  # requests below this get the canned reply, larger ones their own bytes back


def _canned() -> bytes:
    """A serialized ModelInferResponse of add_sub's size (two outputs of 4 FP32)."""
    from tritonclient.grpc import service_pb2

    reply = service_pb2.ModelInferResponse(model_name="add_sub", model_version="1")
    for name in ("OUTPUT0", "OUTPUT1"):
        reply.outputs.add(name=name, datatype="FP32", shape=[4])
        reply.raw_output_contents.append(bytes(16))
    return bytes(reply.SerializeToString())


CANNED = _canned()


def answer(request: bytes) -> bytes:
    return CANNED if len(request) < SMALL_AT else request


def _grpc_handler() -> object:
    import grpc

    def unary(request: bytes, context: object) -> bytes:
        return answer(request)

    async def unary_async(request: bytes, context: object) -> bytes:
        return answer(request)

    return grpc, unary, unary_async


def serve_aio(port: int) -> None:
    grpc, _, unary_async = _grpc_handler()  # type: ignore[misc]

    async def main() -> None:
        options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
        server = grpc.aio.server(options=options)
        handler = grpc.method_handlers_generic_handler(
            "inference.GRPCInferenceService", {"ModelInfer": grpc.unary_unary_rpc_method_handler(unary_async)}
        )
        server.add_generic_rpc_handlers((handler,))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print("ready", flush=True)
        await server.wait_for_termination()

    asyncio.run(main())


def serve_sync(port: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    grpc, unary, _ = _grpc_handler()  # type: ignore[misc]
    options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
    server = grpc.server(ThreadPoolExecutor(8), options=options)
    handler = grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService", {"ModelInfer": grpc.unary_unary_rpc_method_handler(unary)}
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


class _H2Protocol(asyncio.Protocol):
    """The `h2` library's state machine; the whole request is answered at END_STREAM."""

    def __init__(self) -> None:
        import h2.config
        import h2.connection

        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        self.conn = h2.connection.H2Connection(config)
        self.bodies: dict[int, bytearray] = {}
        self.pending: dict[int, memoryview] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        from h2.settings import SettingCodes

        self.transport = transport
        self.conn.initiate_connection()
        self.conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 4 << 20})
        self.conn.increment_flow_control_window((4 << 20) - 65535)
        transport.write(self.conn.data_to_send())  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        import h2.exceptions

        try:
            self._events(data)
        except h2.exceptions.ProtocolError:
            self.transport.close()

    def _events(self, data: bytes) -> None:
        import h2.events

        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                self.bodies[event.stream_id] = bytearray()
            elif isinstance(event, h2.events.DataReceived):
                self.bodies[event.stream_id] += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                body = self.bodies.pop(event.stream_id)
                reply = answer(bytes(body[5:]))
                self.conn.send_headers(event.stream_id, [(b":status", b"200"), (b"content-type", b"application/grpc")])
                self.pending[event.stream_id] = memoryview(len(reply).to_bytes(5, "big") + reply)
                self._pump(event.stream_id)
            elif isinstance(event, h2.events.WindowUpdated):
                for stream in list(self.pending):
                    self._pump(stream)
            elif isinstance(event, h2.events.StreamReset):
                self.bodies.pop(event.stream_id, None)
                self.pending.pop(event.stream_id, None)
        self.transport.write(self.conn.data_to_send())  # type: ignore[attr-defined]

    def _pump(self, stream: int) -> None:
        data = self.pending[stream]
        while data:
            room = min(self.conn.local_flow_control_window(stream), self.conn.max_outbound_frame_size)
            if room <= 0:
                self.pending[stream] = data
                return
            self.conn.send_data(stream, data[:room].tobytes())
            data = data[room:]
        del self.pending[stream]
        self.conn.send_headers(stream, [(b"grpc-status", b"0")], end_stream=True)


def serve_h2(port: int) -> None:
    import uvloop

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_H2Protocol, "127.0.0.1", port)
        print("ready", flush=True)
        await server.serve_forever()

    uvloop.run(main())


def serve_lean(port: int) -> None:
    import uvloop

    from seawall.frontends.grpc.lean import LeanServer
    from seawall.frontends.grpc.limits import Http2Limits

    class Handler:  # what grpc.unary_unary_rpc_method_handler builds, without importing grpc
        request_streaming = False
        request_deserializer = response_serializer = None

        @staticmethod
        async def unary_unary(request: bytes, context: object) -> bytes:
            return answer(request)

    async def main() -> None:
        server = LeanServer({PATH: Handler()}, Http2Limits())
        await server.start("127.0.0.1", port)
        print("ready", flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "aio-exp":
        os.environ["GRPC_EXPERIMENTS"] = "-event_engine_listener,-event_engine_for_all_other_endpoints"
    {"aio": serve_aio, "aio-exp": serve_aio, "sync": serve_sync, "h2": serve_h2, "lean": serve_lean}[kind](port)


if __name__ == "__main__":
    main()
