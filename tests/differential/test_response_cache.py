"""Triton 2.51 and Seawall with `--cache-config local,size=<bytes>` on one repository: the same requests give the
same statistics counts (hits included in success/queue, excluded from executions), the same per-model cache
metrics, and the same `response_cache` in the configuration."""

from __future__ import annotations

import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.harness import EXAMPLES, TRITON, ServerProcess, start_seawall, start_triton

_CACHE = "--cache-config=local,size=1048576"


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    if not TRITON.exists():
        pytest.skip(f"the reference Triton is not available at {TRITON}")
    root: Path = tmp_path_factory.mktemp("differential_cache")
    for source in (EXAMPLES / "add_sub", EXAMPLES / "identity"):
        shutil.copytree(source, root / source.name, ignore=shutil.ignore_patterns("__pycache__"))
    config = root / "add_sub" / "config.pbtxt"
    config.write_text(config.read_text() + "response_cache { enable: true }\n")
    triton = start_triton(root, _CACHE)
    try:
        seawall = start_seawall(_CACHE, repository=root)
    except BaseException:
        triton.stop()
        raise
    for server in (triton, seawall):
        client = httpclient.InferenceServerClient(server.http)
        for value in (1.0, 1.0, 2.0, 1.0):
            inputs = [httpclient.InferInput(n, [4], "FP32") for n in ("INPUT0", "INPUT1")]
            for tensor in inputs:
                tensor.set_data_from_numpy(np.full(4, value, dtype=np.float32))
            client.infer("add_sub", inputs)
    yield triton, seawall
    seawall.stop()
    triton.stop()


def _counts(value: Any) -> Any:
    """Statistics with every duration's nanoseconds replaced by whether they are positive."""
    if isinstance(value, dict):
        return {k: (v > 0 if k in ("ns", "last_inference") else _counts(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_counts(v) for v in value]
    return value


def test_statistics_count_hits_and_misses_alike(pair: tuple[ServerProcess, ServerProcess]) -> None:
    triton, seawall = (httpclient.InferenceServerClient(s.http).get_inference_statistics() for s in pair)
    assert _counts(triton) == _counts(seawall)
    [add_sub] = [m for m in seawall["model_stats"] if m["name"] == "add_sub"]
    inference = add_sub["inference_stats"]
    assert (inference["cache_hit"]["count"], inference["cache_miss"]["count"], inference["success"]["count"]) == (
        2,
        2,
        4,
    )
    assert (add_sub["inference_count"], add_sub["execution_count"]) == (2, 2)


def _cache_metrics(server: ServerProcess) -> list[str]:
    """The per-model cache lines with their counts (durations differ between servers: only their names)."""
    text = urllib.request.urlopen(f"http://{server.metrics}/metrics", timeout=10).read().decode()
    lines = []
    for line in text.splitlines():
        if "_per_model" in line:
            lines.append(line if "num_" in line or line.startswith("#") else line.rsplit(" ", 1)[0])
    return lines


def test_per_model_cache_metrics_agree(pair: tuple[ServerProcess, ServerProcess]) -> None:
    triton, seawall = (_cache_metrics(s) for s in pair)
    assert triton == seawall
    assert 'nv_cache_num_hits_per_model{model="add_sub",version="1"} 2' in seawall


def test_the_configuration_shows_the_response_cache(pair: tuple[ServerProcess, ServerProcess]) -> None:
    for server in pair:
        config = httpclient.InferenceServerClient(server.http).get_model_config("add_sub")
        assert config["response_cache"] == {"enable": True}
        assert "response_cache" not in httpclient.InferenceServerClient(server.http).get_model_config("identity")
