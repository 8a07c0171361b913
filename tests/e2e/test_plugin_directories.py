"""Backend and cache plugins from --backend-directory and --cache-directory, and the response cache, against a
real `seawall` process: plugins load only from trusted paths (the refusal names the path), every error path
has its exact message, and cache hits and misses are counted over HTTP, gRPC and metrics."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from seawall.core.response_cache import ENTRY_OVERHEAD, encode_response
from seawall.core.types import InferResponse, Tensor
from tests.harness import ServerProcess, http_request, run_seawall, start_seawall

BACKEND = '''
"""A test backend: OUTPUT0 = INPUT0 * factor (--backend-config=doubler,factor=<n>, default 2)."""
from seawall.core.types import InferResponse, Tensor


class _Instance:
    name = "doubler_0"

    def __init__(self, factor):
        self.factor = factor

    def is_healthy(self):
        return True

    async def execute(self, requests):
        return [
            InferResponse(r.model_name, r.model_version, [Tensor.from_numpy("OUTPUT0", r.inputs[0].data * self.factor)])
            for r in requests
        ]


class _Model:
    def __init__(self, factor):
        self.instances = [_Instance(factor)]

    async def unload(self):
        pass


class _Backend:
    name = "doubler"

    def __init__(self, settings):
        self.factor = int(settings.get("factor", "2"))

    async def load(self, context):
        return _Model(self.factor)


def create_backend(settings):
    return _Backend(settings)
'''

CACHE = '''
"""A test cache: a dict holding at most `capacity` responses (--cache-config=memo,capacity=<n>)."""


class _Memo:
    def __init__(self, capacity):
        self.capacity = capacity
        self.entries = {}

    def lookup(self, key):
        return self.entries.get(key)

    def insert(self, key, value):
        if len(self.entries) < self.capacity:
            self.entries[key] = value


def create_cache(settings):
    return _Memo(int(settings["capacity"]))
'''

MODEL = """name: "double"
backend: "{backend}"
max_batch_size: 0
input [ {{ name: "INPUT0", data_type: TYPE_FP32, dims: [ 4 ] }} ]
output [ {{ name: "OUTPUT0", data_type: TYPE_FP32, dims: [ 4 ] }} ]
{extra}
"""


def _setup(tmp_path: Path, backend: str = "doubler", extra: str = "response_cache { enable: true }") -> Path:
    """tmp_path/{backends/doubler/backend.py, caches/memo/cache.py, models/double}, all trusted (0755)."""
    tmp_path.chmod(0o755)
    for kind, name, filename, text in (
        ("backends", "doubler", "backend.py", BACKEND),
        ("caches", "memo", "cache.py", CACHE),
    ):
        (tmp_path / kind / name).mkdir(parents=True)
        (tmp_path / kind / name / filename).write_text(text)
    (tmp_path / "models" / "double" / "1").mkdir(parents=True)
    (tmp_path / "models" / "double" / "config.pbtxt").write_text(MODEL.format(backend=backend, extra=extra))
    return tmp_path


def _start(root: Path, *args: str) -> ServerProcess:
    return start_seawall(
        f"--backend-directory={root / 'backends'}",
        f"--cache-directory={root / 'caches'}",
        *args,
        repository=root / "models",
    )


def _run(root: Path, *args: str) -> tuple[int, str]:
    done = run_seawall(
        f"--model-repository={root / 'models'}",
        f"--backend-directory={root / 'backends'}",
        f"--cache-directory={root / 'caches'}",
        "--http-port=0",
        "--grpc-port=0",
        "--metrics-port=0",
        *args,
    )
    return done.returncode, done.stderr.strip()


def _reason(server: ServerProcess) -> tuple[str, str]:
    status, _, body = http_request(server, "POST", "/v2/repository/index")
    assert status == 200
    [entry] = json.loads(body)
    return entry["state"], entry.get("reason", "")


def _double(client: httpclient.InferenceServerClient, value: float) -> list[float]:
    tensor = httpclient.InferInput("INPUT0", [4], "FP32")
    tensor.set_data_from_numpy(np.full(4, value, dtype=np.float32))
    result: list[float] = client.infer("double", [tensor]).as_numpy("OUTPUT0").tolist()
    return result


# ------------------------------------------------------------------------------------------ backends


def test_a_backend_plugin_serves_its_models_with_its_settings(tmp_path: Path) -> None:
    root = _setup(tmp_path, extra="")
    server = _start(root, "--backend-config=doubler,factor=3")
    try:
        assert server.is_ready()
        assert _double(httpclient.InferenceServerClient(server.http), 2.0) == [6.0] * 4
        assert f"loaded plugin 'doubler' from {root / 'backends' / 'doubler' / 'backend.py'}" in server.log()
    finally:
        server.stop()


@pytest.mark.parametrize("mode", [0o775, 0o757])
def test_a_backend_in_a_writable_directory_is_refused_naming_the_path(tmp_path: Path, mode: int) -> None:
    root = _setup(tmp_path)
    (root / "backends" / "doubler").chmod(mode)
    who = "its group" if mode == 0o775 else "others"
    expected = f"refusing to load plugin 'doubler': '{root / 'backends' / 'doubler'}' is writable by {who}"
    server = _start(root, "--exit-on-error=false")
    try:
        assert _reason(server) == ("UNAVAILABLE", expected)
        assert http_request(server, "GET", "/v2/health/live")[0] == 200
        assert "loaded plugin" not in server.log()
    finally:
        server.stop()
    status, stderr = _run(root)  # exit-on-error (the default) stops start-up
    assert (status, stderr) == (1, "error: creating server: Internal - failed to load all models")


def test_an_explicitly_allowed_untrusted_backend_directory_is_loaded(tmp_path: Path) -> None:
    root = _setup(tmp_path, extra="")
    (root / "backends").chmod(0o777)
    server = _start(root, f"--allow-untrusted-plugin-path={root / 'backends'}")
    try:
        assert _double(httpclient.InferenceServerClient(server.http), 1.0) == [2.0] * 4
    finally:
        server.stop()


AVAILABLE = "python, onnxruntime, pytorch, doubler (--backend-directory)"


@pytest.mark.parametrize(
    ("backend", "source", "expected"),
    [
        ("doubler", "x = 1\n", "backend 'doubler' has no create_backend(settings) function"),
        (
            "doubler",
            "def create_backend(settings):\n    return 42\n",
            "create_backend of backend 'doubler' returned no backend (it has no load method)",
        ),
        (
            "doubler",
            "def create_backend(settings):\n    raise KeyError('k')\n",
            "create_backend of backend 'doubler' failed: KeyError: 'k'",
        ),
        ("tensorrt_plan", BACKEND, "backend 'tensorrt_plan' is unknown; available backends: " + AVAILABLE),
        (
            "tensorflow",
            BACKEND,
            f"backend 'tensorflow' is not supported by Seawall yet; available backends: {AVAILABLE}",
        ),
        ("Doubler", BACKEND, "plugin name 'Doubler' is not valid"),
        ("../backends/doubler", BACKEND, "plugin name '../backends/doubler' is not valid"),
    ],
)
def test_backend_plugin_errors_fail_the_model_with_their_reason(
    tmp_path: Path, backend: str, source: str, expected: str
) -> None:
    root = _setup(tmp_path, backend=backend)
    (root / "backends" / "doubler" / "backend.py").write_text(source)
    server = _start(root, "--exit-on-error=false")
    try:
        assert _reason(server) == ("UNAVAILABLE", expected)
        assert http_request(server, "GET", "/v2/health/live")[0] == 200
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------ caches


def _statistics(server: ServerProcess) -> tuple[dict[str, Any], dict[str, Any]]:
    over_http = httpclient.InferenceServerClient(server.http).get_inference_statistics("double")
    over_grpc = grpcclient.InferenceServerClient(server.grpc).get_inference_statistics("double", as_json=True)
    return over_http["model_stats"][0], over_grpc["model_stats"][0]


def _counts(server: ServerProcess) -> tuple[int, int, int, int, int]:
    """(cache hits, cache misses, successes, inferences, executions), the same over HTTP and gRPC (whose JSON
    leaves zero counts out)."""
    over_http, over_grpc = _statistics(server)
    found = []
    for stats in (over_http, over_grpc):
        inference = stats["inference_stats"]
        found.append(
            tuple(
                int(value)
                for value in (
                    inference.get("cache_hit", {}).get("count", 0),
                    inference.get("cache_miss", {}).get("count", 0),
                    inference.get("success", {}).get("count", 0),
                    stats.get("inference_count", 0),
                    stats.get("execution_count", 0),
                )
            )
        )
    assert found[0] == found[1]
    return found[0]  # type: ignore[return-value]


def test_local_cache_hits_skip_execution_and_are_counted_over_http_grpc_and_metrics(tmp_path: Path) -> None:
    server = _start(_setup(tmp_path), "--cache-config=local,size=1048576")
    try:
        client = httpclient.InferenceServerClient(server.http)
        assert [_double(client, v) for v in (1.0, 1.0, 2.0, 1.0)] == [[2.0] * 4, [2.0] * 4, [4.0] * 4, [2.0] * 4]
        assert _counts(server) == (2, 2, 4, 2, 2)
        text = urllib.request.urlopen(f"http://{server.metrics}/metrics", timeout=10).read().decode()
        assert 'nv_cache_num_hits_per_model{model="double",version="1"} 2' in text.splitlines()
        assert 'nv_cache_num_misses_per_model{model="double",version="1"} 2' in text.splitlines()
        assert re.search(r"\| cache_enabled +\| 1 +\|", server.log())
    finally:
        server.stop()


def _entry_cost() -> int:
    """What one response of the `double` model costs in the local cache: key, value and overhead."""
    output = Tensor.from_numpy("OUTPUT0", np.zeros(4, dtype=np.float32))
    return 32 + len(encode_response(InferResponse("double", "1", [output]))) + ENTRY_OVERHEAD


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (_entry_cost() - 1, (0, 3)),  # nothing fits
        (_entry_cost(), (0, 3)),  # one entry fits: 2.0 evicts 1.0
        (2 * _entry_cost(), (1, 2)),  # both fit: the third request hits
    ],
)
def test_the_local_cache_stays_within_its_size(tmp_path: Path, size: int, expected: tuple[int, int]) -> None:
    server = _start(_setup(tmp_path), f"--cache-config=local,size={size}")
    try:
        client = httpclient.InferenceServerClient(server.http)
        for value in (1.0, 2.0, 1.0):
            _double(client, value)
        assert _counts(server)[:2] == expected
    finally:
        server.stop()


def test_the_deprecated_byte_size_flag_configures_the_local_cache(tmp_path: Path) -> None:
    server = _start(_setup(tmp_path), "--response-cache-byte-size=65536")
    try:
        client = httpclient.InferenceServerClient(server.http)
        _double(client, 1.0)
        _double(client, 1.0)
        assert _counts(server)[:2] == (1, 1)
        assert "'--response-cache-byte-size' has been deprecated!" in server.log()
    finally:
        server.stop()


def test_a_cache_plugin_is_used(tmp_path: Path) -> None:
    root = _setup(tmp_path)
    server = _start(root, "--cache-config=memo,capacity=1")
    try:
        client = httpclient.InferenceServerClient(server.http)
        for value in (1.0, 2.0, 1.0, 2.0):
            _double(client, value)
        assert _counts(server) == (1, 3, 4, 3, 3)  # capacity 1: only the first response is kept
        assert f"loaded plugin 'memo' from {root / 'caches' / 'memo' / 'cache.py'}" in server.log()
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("mode", "Invalid argument - refusing to load plugin 'memo': '{dir}' is writable by others"),
        ("x = 1\n", "Unsupported - cache 'memo' has no create_cache(settings) function"),
        (
            "def create_cache(settings):\n    return {}\n",
            "Unsupported - create_cache of cache 'memo' returned no cache (it needs lookup and insert)",
        ),
        (
            "def create_cache(settings):\n    raise ValueError('no')\n",
            "Internal - create_cache of cache 'memo' failed: ValueError: no",
        ),
    ],
)
def test_cache_plugin_errors_stop_start_up(tmp_path: Path, change: str, expected: str) -> None:
    root = _setup(tmp_path)
    plugin = root / "caches" / "memo"
    if change == "mode":
        plugin.chmod(0o777)
    else:
        (plugin / "cache.py").write_text(change)
    assert _run(root, "--cache-config=memo,capacity=1") == (
        1,
        "error: creating server: " + expected.format(dir=plugin),
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--cache-config=size=100"],
            'Bad option: "--cache-config".\nNo cache specified. --cache-config option format is '
            "<cache name>,<setting>=<value>. Got size=100",
        ),
        (
            ["--cache-config=local,size="],
            'Bad option: "--cache-config".\n'
            "--cache-config option format is '<cache name>,<setting>=<value>'. Got local,size=",
        ),
        (
            ["--cache-config=local,size=abc"],
            "error: creating server: "
            "Invalid argument - Failed to initialize LocalCache: 'size' must be a positive number of bytes. Got abc",
        ),
        (
            ["--cache-config=local,size=0"],
            "error: creating server: "
            "Invalid argument - Failed to initialize LocalCache: 'size' must be a positive number of bytes. Got 0",
        ),
        (
            ["--cache-config=local,bogus=1"],
            "error: creating server: "
            "Invalid argument - Failed to initialize LocalCache: config didn't contain a valid 'size' field.",
        ),
        (
            ["--cache-config=nothere,size=1"],
            "error: creating server: "
            "Unsupported - cache 'nothere' is not available (no cache.py in its plugin directory)",
        ),
        (
            ["--cache-config=Local,size=1"],
            "error: creating server: Invalid argument - plugin name 'Local' is not valid",
        ),
        (
            ["--cache-config=local,size=1", "--cache-config=memo,capacity=1"],
            'Bad option: "--cache-config".\nonly one cache can be configured. Got local, memo',
        ),
        (
            ["--response-cache-byte-size=abc"],
            'Bad option: "--response-cache-byte-size".\nInvalid option value. Got abc',
        ),
        (
            ["--cache-config=local,size=100", "--response-cache-byte-size=100"],
            "Warning: '--response-cache-byte-size' has been deprecated! This will default to the 'local' cache "
            "implementation with the provided byte size for its config. Please use '--cache-config' instead. "
            "The equivalent --cache-config CLI args would be: '--cache-config=local,size=100'\n"
            "Error: Incompatible flags --response-cache-byte-size and --cache-config both provided. "
            "Please provide one or the other.",
        ),
    ],
)
def test_bad_cache_settings_stop_start_up_with_exact_errors(tmp_path: Path, args: list[str], expected: str) -> None:
    assert _run(_setup(tmp_path), *args) == (1, expected)


@pytest.mark.parametrize(
    ("platform", "backend"), [("tensorflow_savedmodel", "tensorflow"), ("tensorrt_plan", "tensorrt")]
)
def test_a_platform_of_a_backend_seawall_lacks_names_the_backends_that_exist(
    tmp_path: Path, platform: str, backend: str
) -> None:
    root = _setup(tmp_path, backend="", extra=f'platform: "{platform}"')
    server = _start(root, "--exit-on-error=false")
    try:
        expected = f"backend '{backend}' is not supported by Seawall yet; available backends: {AVAILABLE}"
        assert _reason(server) == ("UNAVAILABLE", expected)
        assert http_request(server, "GET", "/v2/health/live")[0] == 200
    finally:
        server.stop()
