"""Safe intake of a TorchScript model: find the file, bound it, check its pins, and check it is a TorchScript archive
before torch sees it.

Imports `errors` only; never torch. Only an archive written by `torch.jit.save` (a zip with `<root>/constants.pkl`
and `<root>/code/`) is passed on, to `torch.jit.load`, never to `torch.load`: a pickle, a `torch.save` checkpoint or
anything else named `model.pt` fails the load here, and none of its content runs.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Sequence

from seawall.backends.model_files import locate_model_file, read_bounded, verify_pins
from seawall.errors import InvalidArgumentError


def read_model(
    model_dir: str, version_dir: str, filename: str, pins: Sequence[dict[str, str]], limit: int, model_name: str
) -> tuple[bytes, str]:
    """The bytes of the model file `<version>/<filename>` and its path relative to the model directory.

    Raises:
        InvalidArgumentError: a name leaving the version directory, a missing, oversized or unpinned file, or a
            file that is not a TorchScript archive. Messages name files relative to the model directory.
    """
    path, relative = locate_model_file(model_dir, version_dir, filename, model_name)
    data = read_bounded(os.path.realpath(path), limit, relative, model_name)
    verify_pins(data, relative, pins, model_name)
    if not is_torchscript(data):
        raise InvalidArgumentError(
            f"model file '{relative}' of model '{model_name}' is not a TorchScript archive (torch.jit.save); "
            "pickles and torch.save checkpoints are never loaded"
        )
    return data, relative


def is_torchscript(data: bytes) -> bool:
    """Whether `data` is a zip archive laid out as torch.jit.save writes it (one root folder with constants.pkl,
    data.pkl and code/)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, ValueError, OSError):
        return False
    roots = {name.split("/", 1)[0] for name in names}
    if len(roots) != 1:
        return False
    root = roots.pop()
    return {f"{root}/constants.pkl", f"{root}/data.pkl"} <= set(names) and any(
        name.startswith(f"{root}/code/") for name in names
    )
