"""Placeholder command line (replaced by the full tritonserver flag table)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from seawall.app import serve
from seawall.errors import SeawallError
from seawall.options import GrpcOptions, HttpOptions, MetricsOptions, Options, RepositoryOptions


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="seawall")
    parser.add_argument("--model-repository", action="append", default=[])
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname).1s %(name)s] %(message)s")
    options = Options(
        repository=RepositoryOptions(paths=tuple(args.model_repository)),
        http=HttpOptions(port=args.http_port),
        grpc=GrpcOptions(port=args.grpc_port),
        metrics=MetricsOptions(port=args.metrics_port),
    )
    try:
        asyncio.run(serve(options))
    except SeawallError as exc:
        print(f"error: creating server: {exc.code.value} - {exc.message}", file=sys.stderr)
        sys.exit(1)
