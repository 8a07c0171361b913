"""The metrics frontend in process over the embedding API: `--metrics-config counter_latencies=false`."""

from __future__ import annotations

import asyncio

from seawall.app import open_server
from seawall.frontends.metrics import MetricsFrontend
from seawall.options import MetricsOptions, Options, RepositoryOptions
from tests.harness import EXAMPLES


async def _scrape(host: str, port: int) -> str:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    reply = await reader.read()
    writer.close()
    await writer.wait_closed()
    return reply.decode()


async def test_counter_latencies_false_drops_the_duration_counters() -> None:
    base = Options(repository=RepositoryOptions(paths=(str(EXAMPLES),)))
    quiet = base.replace(metrics=MetricsOptions(port=0, config=(("counter_latencies", "false"),)))
    full = base.replace(metrics=MetricsOptions(port=0))
    async with open_server(base) as server:
        texts = []
        for options in (quiet, full):
            frontend = MetricsFrontend(server, options)
            host, port = await frontend.start()
            try:
                texts.append(await _scrape(host, port))
            finally:
                await frontend.stop()
    assert texts[0].startswith("HTTP/1.1 200 OK") and "nv_inference_request_success{" in texts[0]
    assert "_duration_us" not in texts[0]
    assert 'nv_inference_request_duration_us{model="add_sub",version="1"}' in texts[1]
