"""Compile the request path with mypyc into `seawall/_native/` (see `seawall/native.py`): `make native`, or
`python -m seawall.native_build`. Needs mypy (the test extra) and a C compiler; the sources stay the reference and
run whenever the build is missing or stale.

The modules are those every inference passes through on the event loop and in a stub: the core's types, server,
inference pipeline, scheduler, execution, validation and statistics, the HTTP frontend and most of the gRPC one,
and the Python backend's host, in-process and stub sides (docs/architecture.md lists what stays interpreted, and why).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import sysconfig
import tempfile

from seawall import native
from seawall.native import MANIFEST, NATIVE_DIR, PACKAGE_DIR, source_digest, source_path

#: the compiled modules (each must pass mypyc: no async generators, no `del` of a local in a coroutine, ...)
MODULES = (
    "seawall.errors",
    "seawall.core.types",
    "seawall.core.server",
    "seawall.core.catalog",
    "seawall.core.scheduler",
    "seawall.core.batcher",
    "seawall.core.execution",
    "seawall.core.request_queue",
    "seawall.core.validation",
    "seawall.core.raw",
    "seawall.core.stats",
    "seawall.core.offload",
    "seawall.core.busy_poll",
    "seawall.core.inference",
    "seawall.core.repository",
    "seawall.core.sequence",
    "seawall.core.sequence_policy",
    "seawall.core.sequence_slots",
    "seawall.frontends.status",
    "seawall.frontends.http.codec",
    "seawall.frontends.http.reader",
    "seawall.frontends.http.connection",
    "seawall.frontends.http.routes",
    "seawall.frontends.http.message",
    "seawall.frontends.http.json_body",
    "seawall.frontends.http.tensors",
    "seawall.frontends.http.body",
    "seawall.frontends.held",
    "seawall.frontends.grpc.codec",
    "seawall.frontends.grpc.wire",
    "seawall.frontends.grpc.service",
    "seawall.frontends.grpc.http2",
    "seawall.frontends.grpc.frames",
    "seawall.frontends.grpc.lean",
    "seawall.frontends.grpc.reader",
    "seawall.frontends.grpc.stream",
    "seawall.frontends.grpc.output",
    "seawall.frontends.grpc.window",
    "seawall.frontends.grpc.parameters",
    "seawall.frontends.grpc.limits",
    "seawall.backends.isolated",  # WorkerSpec extends InstanceSpec: a compiled class has compiled subclasses only
    "seawall.backends.python.instance",
    "seawall.backends.python.instance_core",
    "seawall.backends.python.instance_streams",
    "seawall.backends.python.in_process",
    "seawall.backends.python.in_process_runtime",
    "seawall.backends.python.process",
    "seawall.backends.python.process_io",
    "seawall.backends.python.ipc",
    "seawall.backends.python.calls",
    "seawall.backends.python.call_client",
    "seawall.backends.python.messages",
    "seawall.backends.python.message_decoding",
    "seawall.backends.python.message_kinds",
    "seawall.backends.python.message_fields",
    "seawall.backends.python.user_model",
    "seawall.backends.python.stub",
    "seawall.backends.python.stub_channel",
    "seawall.backends.python.stub_responses",
    "seawall.backends.python.stub_regions",
)
#: the name of mypyc's shared module for the group (`<GROUP>__mypyc`)
GROUP = "seawall_native"


def build(verbose: bool = False) -> None:
    """Compile MODULES and replace `seawall/_native/` with the result and its manifest.

    Raises:
        SystemExit: the compilation failed (mypyc's or the compiler's message is printed).
    """
    from mypyc.build import mypycify  # noqa: PLC0415  # build time only: mypy is not a runtime dependency
    from setuptools import setup  # type: ignore[import-untyped]  # noqa: PLC0415

    root = os.path.dirname(PACKAGE_DIR)
    digests = {module: source_digest(module) for module in MODULES}  # what is compiled is what is checked
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    with tempfile.TemporaryDirectory(prefix="seawall-native-") as work:
        paths = [os.path.relpath(source_path(module), root) for module in MODULES]
        here = os.getcwd()
        os.chdir(root)  # mypy names the modules from their paths
        try:
            # one C file per module: the build takes half the time of one file holding them all
            target = os.path.join(work, "c")
            extensions = mypycify(paths, group_name=GROUP, target_dir=target, verbose=verbose, multi_file=True)
            setup(
                name="seawall-native",
                ext_modules=extensions,
                script_args=["-q", "build_ext", "--build-lib", os.path.join(work, "lib"),
                             "--build-temp", os.path.join(work, "obj"), f"--parallel={os.cpu_count() or 1}"],
            )  # fmt: skip
        finally:
            os.chdir(here)
        staged = os.path.join(work, "native")
        os.makedirs(staged)
        modules = {}
        for module in MODULES:
            built = os.path.join(work, "lib", *module.split(".")) + suffix
            name = module + suffix
            shutil.copy2(built, os.path.join(staged, name))
            modules[module] = {"file": name, "sha256": digests[module]}
        support = {}
        for path in glob.glob(os.path.join(work, "lib", f"{GROUP}__mypyc*{suffix}")):
            support[f"{GROUP}__mypyc"] = os.path.basename(path)
            shutil.copy2(path, os.path.join(staged, os.path.basename(path)))
        manifest = {"python": sys.implementation.cache_tag, "modules": modules, "support": support}
        with open(os.path.join(staged, MANIFEST), "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=1, sort_keys=True)
        shutil.rmtree(NATIVE_DIR, ignore_errors=True)
        shutil.copytree(staged, NATIVE_DIR)


def is_current() -> bool:
    """The build in `seawall/_native/` is of MODULES and of their sources as they are now (importing seawall
    checked it)."""
    return native.status == "" and native.compiled == set(MODULES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--if-stale", action="store_true", help="do nothing when the build matches the sources")
    args = parser.parse_args()
    if args.if_stale and is_current():
        print(f"{NATIVE_DIR} is up to date")
        return
    build(args.verbose)
    print(f"compiled {len(MODULES)} modules into {NATIVE_DIR}")


if __name__ == "__main__":
    main()
