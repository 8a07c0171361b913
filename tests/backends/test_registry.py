"""The backend registry lists only backends that exist and says which exist when asked for another."""

from __future__ import annotations

import pytest

from seawall.backends.registry import BACKENDS, NOT_YET, BackendRegistry
from seawall.errors import UnsupportedError
from seawall.options import BackendOptions


def test_only_backends_that_exist_are_registered() -> None:
    assert sorted(BACKENDS) == ["onnxruntime", "python", "pytorch"]
    assert not NOT_YET & set(BACKENDS)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        *[
            (
                name,
                f"backend '{name}' is not supported by Seawall yet; available backends: python, onnxruntime, pytorch",
            )
            for name in sorted(NOT_YET)
        ],
        ("nosuch", "backend 'nosuch' is unknown; available backends: python, onnxruntime, pytorch"),
        ("x" * 100, f"backend '{'x' * 64}' is unknown; available backends: python, onnxruntime, pytorch"),
    ],
)
def test_without_plugins_another_backend_is_refused_naming_python(name: str, message: str) -> None:
    with pytest.raises(UnsupportedError) as info:
        BackendRegistry(BackendOptions()).get(name)
    assert info.value.message == message
