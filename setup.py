"""The forwarding router's hot path compiled with Cython (everything else is in pyproject.toml).

The modules below are plain Python and stay so: Cython compiles them unchanged (annotations are not used as C
types), which cut the router's CPU per request by 12% (bench/router_ab.py, README "Measured"); a .pxd beside a
module gives C types to a chosen function of it (ngm/dataplane/limits/memory.pxd). Without a C compiler the
build goes on without them and ngm runs them as Python. ngm/compiled.py loads a compiled module only when it
was built from the source beside it (the hashes in ngm/compiled.json); else the source.

    .venv/bin/python setup.py build_ext --inplace    # what scripts/setup.sh runs when these sources change
"""

import importlib.util
import json
import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HOT_PATH = [  # the data plane, every module of it
    "ngm/dataplane/access_log.py",
    "ngm/dataplane/circuit.py",
    "ngm/dataplane/edge.py",
    "ngm/dataplane/inflight.py",
    "ngm/dataplane/invoke.py",
    "ngm/dataplane/keys.py",
    "ngm/dataplane/memo.py",
    "ngm/dataplane/protocol.py",
    "ngm/dataplane/router.py",
    "ngm/dataplane/strategies.py",
    "ngm/dataplane/table.py",
    "ngm/dataplane/traffic.py",
    "ngm/dataplane/turn_writes.py",
    "ngm/dataplane/upstream.py",
    "ngm/dataplane/limits/algorithms.py",
    "ngm/dataplane/limits/leases.py",
    "ngm/dataplane/limits/limiter.py",
    "ngm/dataplane/limits/memory.py",
    "ngm/dataplane/limits/pipe.py",
    "ngm/dataplane/limits/redis_backend.py",
]
MANIFEST = "ngm/compiled.json"
# ngm/compiled.py's digest of what a module is built from, loaded alone (importing ngm would run its setup)
_spec = importlib.util.spec_from_file_location("_ngm_compiled", Path(__file__).parent / "ngm" / "compiled.py")
_compiled = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_compiled)


class BuildHotPath(build_ext):
    """Build what compiles, skip what does not (with a warning), and record which sources were built."""

    def run(self) -> None:
        self.built: dict[str, str] = {}
        super().run()
        if self.inplace:  # builds of modules no longer listed would otherwise linger (and run as source)
            listed = {Path(path).with_suffix("") for path in HOT_PATH}
            for built in [*Path("ngm").glob("**/*.cpython-*.so"), *Path("ngm").glob("**/*.c")]:
                if built.parent / built.name.split(".")[0] not in listed:
                    built.unlink()
        target = Path(MANIFEST if self.inplace else os.path.join(self.build_lib, MANIFEST))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps({"modules": self.built}, indent=1, sort_keys=True) + "\n")

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # no compiler, no headers: that module stays Python
            print(f"warning: {ext.name} not compiled ({exc}); it runs as Python", file=sys.stderr)
            return
        self.built[ext.name] = _compiled.source_digest(Path(ext.name.replace(".", "/") + ".py"))


def hot_path_extensions() -> list:
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("warning: Cython is not installed; the hot path runs as Python", file=sys.stderr)
        return []
    # Cython regenerates a module's C when its source is newer, which misses a .pxd removed since the last build,
    # and setuptools rebuilds an extension when its C is newer to the second: a module whose sources differ from
    # those its build record names is built afresh, its C and builds removed first
    try:
        recorded = json.loads(Path(MANIFEST).read_text())["modules"]
    except (OSError, ValueError, KeyError):
        recorded = {}
    for path in HOT_PATH:
        source = Path(path)
        generated = source.with_suffix(".c")
        if generated.exists() and recorded.get(path[:-len(".py")].replace("/", ".")) != _compiled.source_digest(source):
            for stale in [generated, *Path().glob(f"build/lib*/{source.parent}/{source.stem}.cpython-*.so"),
                          *source.parent.glob(f"{source.stem}.cpython-*.so")]:
                stale.unlink()
    # and a change here (directives) must redo all
    settings_changed = any(c.exists() and c.stat().st_mtime < Path(__file__).stat().st_mtime
                           for c in (Path(path).with_suffix(".c") for path in HOT_PATH))
    extensions = cythonize(HOT_PATH, quiet=True, force=settings_changed, compiler_directives={
        "language_level": 3,
        "annotation_typing": False,  # annotations document; they must not become C type checks
    })
    for extension in extensions:
        extension.extra_compile_args = ["-w"]  # gcc's warnings on generated C say nothing to act on
    return extensions


setup(ext_modules=hot_path_extensions(), cmdclass={"build_ext": BuildHotPath})
