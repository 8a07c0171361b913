"""The public surface is exactly `seawall.__all__`."""

from __future__ import annotations

import seawall


def test_all_lists_the_public_names() -> None:
    public = {name for name in dir(seawall) if not name.startswith("_")}
    # submodules imported as a side effect of the re-exports are not part of the API
    modules = {
        "app",
        "core",
        "errors",
        "options",
        "backends",
        "frontends",
        "security",
        "cli",
        "plugins",
        "listeners",
        "native",  # the compiled request path: its loader (`import seawall` runs it) and its build
        "native_build",
    }
    assert public - modules == set(seawall.__all__)
    assert seawall.__all__ == sorted(seawall.__all__)
