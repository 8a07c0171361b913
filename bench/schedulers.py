"""The sequence batcher's and the ensemble scheduler's own CPU per request, in process, their models faked.

No HTTP, no stub process: what `core/sequence.py` (the `sequence` workload's model, direct strategy, 8 slots) and
`core/ensemble.py` (the `pipeline` ensemble of three steps) cost per request by themselves, steadier than a
server cell on a shared machine. Another checkout's Seawall is measured by putting it first on PYTHONPATH, from a
directory that holds no `seawall` package:

    .venv/bin/python -m bench.schedulers [--requests 40000] [--rounds 5]
    cd /tmp && PYTHONPATH=<other checkout>:<this checkout> <this checkout>/.venv/bin/python -m bench.schedulers
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncGenerator, Sequence

import numpy as np

from bench.servers import MODELS
from seawall.core import ensemble, ensemble_plan, model_config
from seawall.core.config_proto import ModelConfig
from seawall.core.sequence import SequenceScheduler
from seawall.core.sequence_policy import SequencePolicy
from seawall.core.stats import StatsRecorder
from seawall.core.types import InferRequest, InferResponse, StreamResponse, Tensor


def _config(model: str) -> ModelConfig:
    config = model_config.read_config(str(MODELS / model))
    assert config is not None
    model_config.complete_defaults(config, model)
    return config


class _Instance:
    """The sequence model's one instance: answers every request of a batch at once."""

    name = "sequence_0"
    pipeline_depth = 1

    def is_healthy(self) -> bool:
        return True

    async def execute(self, requests: Sequence[InferRequest]) -> list[InferResponse]:
        await asyncio.sleep(0)
        output = Tensor("OUTPUT", "INT32", (1, 1), np.zeros((1, 1), np.int32))
        return [InferResponse("sequence", "1", [output]) for _ in requests]


class _Step:
    """A composing model of the pipeline: its output is its input."""

    async def infer(self, request: InferRequest) -> InferResponse:
        return InferResponse(request.model_name, "1", [Tensor("OUTPUT0", "FP32", (4,), request.inputs[0].data)])

    def stream(self, request: InferRequest) -> AsyncGenerator[StreamResponse, None]:
        raise NotImplementedError


async def sequence_cost(concurrency: int, total: int) -> float:
    """CPU µs per request of `concurrency` closed loops of 8-request sequences through the sequence batcher."""
    policy = SequencePolicy.from_config(_config("sequence"), str(MODELS / "sequence"))
    scheduler = SequenceScheduler([_Instance()], policy, StatsRecorder("sequence", "1"))
    scheduler.start()
    data = Tensor("INPUT", "INT32", (1, 1), np.ones((1, 1), np.int32))

    async def loop(index: int) -> None:
        for i in range(total // concurrency):
            parameters = {"sequence_id": index * 1_000_000 + i // 8 + 1, "sequence_start": i % 8 == 0}
            parameters["sequence_end"] = i % 8 == 7
            await scheduler.enqueue(InferRequest("sequence", [data], parameters=parameters), 1)

    started = time.process_time()
    await asyncio.gather(*(loop(i) for i in range(concurrency)))
    spent = time.process_time() - started
    await scheduler.stop()
    return spent / total * 1e6


async def ensemble_cost(concurrency: int, total: int) -> float:
    """CPU µs per request of `concurrency` closed loops through the pipeline ensemble's scheduler."""
    steps = ("pipeline_pre", "pipeline_model", "pipeline_post")
    plan = ensemble_plan.plan(_config("pipeline"), {(m, -1): _config(m) for m in steps})
    step = _Step()
    scheduler = ensemble.EnsembleScheduler(plan, 1, lambda name, version: step, StatsRecorder("pipeline", "1"))
    data = Tensor("INPUT", "FP32", (4,), np.ones(4, np.float32))

    async def loop() -> None:
        for _ in range(total // concurrency):
            await scheduler.enqueue(InferRequest("pipeline", [data]), 1)

    started = time.process_time()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return (time.process_time() - started) / total * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=40000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    for name, cost in (("sequence", sequence_cost), ("ensemble", ensemble_cost)):
        for concurrency in (1, 32):
            runs = [asyncio.run(cost(concurrency, args.requests)) for _ in range(args.rounds)]
            print(f"{name} c={concurrency}: {min(runs):.1f} µs CPU per request (best of {args.rounds})", flush=True)


if __name__ == "__main__":
    main()
