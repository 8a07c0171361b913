"""The SageMaker multi-model endpoint (MME): the table of models loaded through `POST /models`, and the checks
a load `url` passes before the core runs code from it.

Imports `core.server`, `errors`, `options` and `security.trust`. The table belongs to the listener (as in Triton);
the core serves each model under its target name through `register_model_directory`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from seawall.core.server import InferenceServer, is_valid_model_name
from seawall.errors import AlreadyExistsError, InvalidArgumentError, ResourceExhaustedError, UnsupportedError
from seawall.options import Options
from seawall.security.trust import untrusted_tree_reason

logger = logging.getLogger(__name__)

#: File systems an MME `url` may never point into, even under a misconfigured model root (CVE-2026-24209).
FORBIDDEN_ROOTS = ("/dev", "/proc", "/sys", "/run", "/etc", "/boot")
URL_REFUSED = "'url' must name a model directory under the SageMaker model root"
ONE_MODEL = "'url' must hold one model: a config.pbtxt or version directories, or a single model directory"
UNTRUSTED = "the model directory is not trusted as a source of code (the server log says why)"
DISABLED = "the SageMaker multi-model endpoint is off (start the server with SAGEMAKER_MULTI_MODEL=true)"


def _is_within(path: str, root: str) -> bool:
    return path != root and os.path.commonpath([path, root]) == root


def confine_model_url(url: object, model_root: str) -> str:
    """The real path of an MME `url`, which must be an existing directory strictly inside `model_root`
    after every symlink is resolved; `..` components, relative paths and system trees are refused.

    Raises:
        InvalidArgumentError: the url is not a string, escapes the root, or is not a directory. The
            message never echoes the path.
    """
    refusal = InvalidArgumentError(URL_REFUSED)
    if not isinstance(url, str) or not url or "\x00" in url or not os.path.isabs(url):
        raise refusal
    if ".." in url.split("/"):
        raise refusal
    root = os.path.realpath(model_root)
    resolved = os.path.realpath(url)
    for forbidden in FORBIDDEN_ROOTS:
        if any(p == forbidden or p.startswith(forbidden + "/") for p in (os.path.normpath(url), resolved)):
            raise refusal
    if not _is_within(resolved, root) or not os.path.isdir(resolved):
        raise refusal
    return resolved


def model_directory(url_dir: str, model_root: str) -> str:
    """The model directory a confined `url_dir` names: itself when it holds `config.pbtxt` or a version
    directory (Triton's `<hash>/model` layout), else its only subdirectory (Triton registers the url as a
    repository then; Seawall has no ensembles, so one model it must be).

    Raises:
        InvalidArgumentError: no single model, or the subdirectory is a symlink leading out of the root.
    """
    entries = sorted(os.scandir(url_dir), key=lambda e: e.name)
    if any(e.name == "config.pbtxt" and e.is_file() for e in entries) or any(
        e.is_dir() and e.name.isascii() and e.name.isdigit() and not e.name.startswith("0") for e in entries
    ):
        return url_dir
    subdirectories = [e for e in entries if e.is_dir() and not e.name.startswith(".")]
    if len(subdirectories) != 1:
        raise InvalidArgumentError(ONE_MODEL)
    resolved = os.path.realpath(subdirectories[0].path)
    if not _is_within(resolved, os.path.realpath(model_root)):
        raise InvalidArgumentError(URL_REFUSED)
    return resolved


@dataclass(frozen=True, slots=True)
class MmeModel:
    """One loaded MME model: the core's model name (the target model) and the `url` it was loaded from."""

    model: str
    url: str


class MultiModelTable:
    """Hash → MmeModel for the models loaded through one SageMaker listener. Event loop thread only."""

    def __init__(self, server: InferenceServer, options: Options) -> None:
        self._server = server
        self._options = options.sagemaker
        self._trusted = tuple(os.path.realpath(p) for p in options.backends.allow_untrusted_paths)
        self._models: dict[str, MmeModel] = {}
        self._loading: set[str] = set()  # hashes whose load is under way: they count against the bound

    def get(self, name: str) -> MmeModel | None:
        return self._models.get(name)

    def listing(self) -> list[dict[str, str]]:
        """`GET /models` entries of the models that are ready (Triton lists only those)."""
        return [
            {"modelName": name, "modelUrl": entry.url}
            for name, entry in sorted(self._models.items())
            if self._server.model_ready(entry.model)
        ]

    async def load(self, name: object, target: str | None, url: object, caller: str) -> None:
        """Load the model under `url` as `target` (default: the hash `name`) and map `name` to it.

        Raises:
            UnsupportedError: MME is off.
            InvalidArgumentError: a bad name, target or url, an untrusted directory, or the load failed.
            AlreadyExistsError: the hash or the target model is already in use.
            ResourceExhaustedError: `max_models` models are loaded already.
        """
        if not self._options.multi_model:
            raise UnsupportedError(DISABLED)
        if not isinstance(name, str) or not is_valid_model_name(name):
            raise InvalidArgumentError("'model_name' must be a valid model name (1-128 of A-Z a-z 0-9 _ . -)")
        if target is not None and not is_valid_model_name(target):
            raise InvalidArgumentError("'X-Amzn-SageMaker-Target-Model' must be a valid model name")
        model_dir = model_directory(confine_model_url(url, self._options.model_root), self._options.model_root)
        if name in self._models or name in self._loading:
            raise AlreadyExistsError(f"SageMaker model '{name}' is already loaded")
        if len(self._models) + len(self._loading) >= self._options.max_models:
            raise ResourceExhaustedError(
                f"at most {self._options.max_models} models can be loaded through the multi-model endpoint"
            )
        self._check_trust(model_dir)
        assert isinstance(url, str)  # confine_model_url accepted it
        logger.info("Loading SageMaker TargetModel: %s", target or name)
        self._loading.add(name)
        try:
            await self._server.register_model_directory(target or name, model_dir, caller=caller)
        finally:
            self._loading.discard(name)
        self._models[name] = MmeModel(target or name, url)

    async def unload(self, name: str, caller: str) -> bool:
        """Unload and unregister the model mapped to `name`; False when nothing is.

        Raises:
            UnavailableError: the core's control mode changed under us (cannot happen while serving).
        """
        entry = self._models.pop(name, None)  # popped first: invoke and a second DELETE now answer 404
        if entry is None:
            return False
        logger.info("Unloading SageMaker TargetModel: %s", entry.model)
        try:
            await self._server.unregister_model_directory(entry.model, caller=caller)
        except BaseException:
            self._models.setdefault(name, entry)
            raise
        return True

    def _check_trust(self, model_dir: str) -> None:
        if any(model_dir == p or model_dir.startswith(p.rstrip("/") + "/") for p in self._trusted):
            return
        reason = untrusted_tree_reason(model_dir)
        if reason is not None:
            logger.warning("SageMaker model directory refused: %s (see --allow-untrusted-plugin-path)", reason)
            raise InvalidArgumentError(UNTRUSTED)
