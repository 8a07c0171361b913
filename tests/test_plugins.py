"""Repository-agent plugins from --repoagent-directory: loaded only from trusted paths, run before model code."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import seawall
from seawall.options import BackendOptions, Options, RepositoryOptions
from tests.harness import EXAMPLES

AGENT = """
def check(config, model_dir):
    if config["parameters"].get("tenant", {}).get("string_value") != "blue":
        raise PermissionError("tenant is not allowed here")
"""


def _setup(tmp_path: Path, tenant: str, mode: int = 0o755) -> Options:
    tmp_path.mkdir(exist_ok=True)
    tmp_path.chmod(0o755)
    plugins = tmp_path / "repoagents"
    (plugins / "tenancy").mkdir(parents=True)
    (plugins / "tenancy" / "agent.py").write_text(AGENT)
    (plugins / "tenancy").chmod(mode)
    plugins.chmod(0o755)
    repo = tmp_path / "models"
    shutil.copytree(EXAMPLES / "add_sub", repo / "add_sub")
    config = repo / "add_sub" / "config.pbtxt"
    config.write_text(
        config.read_text()
        + 'model_repository_agents { agents [{ name: "tenancy" }] }\n'
        + f'parameters {{ key: "tenant" value {{ string_value: "{tenant}" }} }}\n'
    )
    return Options(
        repository=RepositoryOptions(paths=(str(repo),), exit_on_error=False),
        backends=BackendOptions(repoagent_directory=str(plugins)),
    )


def _reason(server: seawall.InferenceServer) -> str:
    [entry] = [e for e in server.repository_index() if e.name == "add_sub"]
    return entry.reason


async def test_a_trusted_agent_accepts_and_refuses(tmp_path: Path) -> None:
    async with seawall.open_server(_setup(tmp_path / "a", "blue")) as server:
        assert server.model_ready("add_sub")
    async with seawall.open_server(_setup(tmp_path / "b", "red")) as server:
        assert not server.model_ready("add_sub")
        assert _reason(server) == "repository agent 'tenancy' refused the model: tenant is not allowed here"


async def test_an_agent_in_a_group_writable_directory_is_not_loaded(tmp_path: Path) -> None:
    options = _setup(tmp_path, "blue", mode=0o775)
    async with seawall.open_server(options) as server:
        assert not server.model_ready("add_sub")
        assert _reason(server).startswith("refusing to load plugin 'tenancy': ")
        assert "is writable by its group" in _reason(server)


async def test_an_explicitly_allowed_untrusted_path_is_loaded(tmp_path: Path) -> None:
    options = _setup(tmp_path, "blue", mode=0o775)
    allowed = str(Path(options.backends.repoagent_directory) / "tenancy")
    options = options.replace(
        backends=BackendOptions(
            repoagent_directory=options.backends.repoagent_directory, allow_untrusted_paths=(allowed,)
        )
    )
    async with seawall.open_server(options) as server:
        assert server.model_ready("add_sub")


@pytest.mark.parametrize("name", ["../x", "Tenancy", "a/b"])
async def test_hostile_agent_names_are_refused(tmp_path: Path, name: str) -> None:
    options = _setup(tmp_path, "blue")
    config = Path(options.repository.paths[0]) / "add_sub" / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "tenancy"', f'name: "{name}"'))
    async with seawall.open_server(options) as server:
        assert not server.model_ready("add_sub")
        assert "is not valid" in _reason(server)
