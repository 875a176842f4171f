"""The compiled hot path (setup.py, ngm/compiled.py): built in this checkout, and never run stale."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import ngm

PACKAGE = Path(ngm.__file__).resolve().parent
PROBE = """
import json, ngm.dataplane.circuit as circuit, ngm.dataplane.router as router
import ngm.dataplane.limits.memory as memory
from ngm import compiled
print(json.dumps({"circuit": circuit.__file__, "router": router.__file__, "memory": memory.__file__,
                  "mark": getattr(circuit, "MARK", None), "status": compiled.status()}))
"""


def probe(package_parent: Path, **env) -> dict:
    run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, cwd=package_parent,
                         env={**os.environ, "PYTHONPATH": str(package_parent), "NGM_COMPILED": "1", **env})
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_the_router_modules_run_compiled_here():
    seen = probe(PACKAGE.parent)
    assert seen["router"].endswith(".so") and seen["circuit"].endswith(".so")
    assert seen["status"]["as_source"] == [] and seen["status"]["compiled"] >= 2


def test_a_module_edited_after_its_build_runs_from_its_source(tmp_path):
    copy = tmp_path / "ngm"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.c"))
    with (copy / "dataplane/circuit.py").open("a") as source:
        source.write("\nMARK = 'edited'\n")
    seen = probe(tmp_path)
    assert seen["circuit"] == str(copy / "dataplane/circuit.py") and seen["mark"] == "edited"
    # the router takes circuit's C types (router.pxd cimports them): with circuit as source, it runs as source
    # too; the memory limiter takes none of them and stays compiled
    assert seen["router"] == str(copy / "dataplane/router.py") and seen["memory"].endswith(".so")
    assert seen["status"]["as_source"] == ["ngm.dataplane.circuit", "ngm.dataplane.router"]


def test_a_module_whose_c_types_changed_after_its_build_runs_from_its_source(tmp_path):
    copy = tmp_path / "ngm"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.c"))
    assert probe(tmp_path)["memory"].endswith(".so")
    with (copy / "dataplane/limits/memory.pxd").open("a") as declarations:
        declarations.write("\n# edited\n")
    seen = probe(tmp_path)
    assert seen["memory"] == str(copy / "dataplane/limits/memory.py")
    # and the limiter, which takes memory's C types, with it
    assert seen["status"]["as_source"] == ["ngm.dataplane.limits.limiter", "ngm.dataplane.limits.memory"]


def test_a_module_missing_from_the_build_record_runs_from_its_source(tmp_path):
    copy = tmp_path / "ngm"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.c"))
    record = json.loads((copy / "compiled.json").read_text())
    del record["modules"]["ngm.dataplane.router"]
    (copy / "compiled.json").write_text(json.dumps(record))
    seen = probe(tmp_path)
    assert seen["router"].endswith("router.py") and seen["circuit"].endswith(".so")


def test_ngm_compiled_0_runs_everything_from_source():
    seen = probe(PACKAGE.parent, NGM_COMPILED="0")
    assert seen["router"].endswith("router.py") and seen["circuit"].endswith("circuit.py")
    assert seen["status"]["disabled"] is True and seen["status"]["compiled"] == 0


def test_a_rebuild_follows_a_pxd_added_and_removed(tmp_path):
    """Cython remakes a module's C when a source is newer than it; a .pxd removed since the last build is not,
    and setup.py remakes the C of a module whose sources differ from those of its build record."""
    # this checkout with its builds, times kept (build/ holds what setuptools compares with): only it rebuilds
    shutil.copytree(PACKAGE, tmp_path / "ngm", ignore=shutil.ignore_patterns("__pycache__"))
    if (PACKAGE.parent / "build").is_dir():  # else every module compiles, slowly
        shutil.copytree(PACKAGE.parent / "build", tmp_path / "build")
    shutil.copy2(PACKAGE.parent / "setup.py", tmp_path / "setup.py")
    declarations = tmp_path / "ngm/dataplane/keys.pxd"
    assert not declarations.exists()
    extension_type = ("import ngm.dataplane.keys as m; "
                      "print(m.__file__.endswith('.so'), hasattr(m.KeyCache, '__reduce_cython__'))")

    def build_and_look() -> str:
        subprocess.run([sys.executable, "-W", "ignore", "setup.py", "-q", "build_ext", "--inplace"], cwd=tmp_path,
                       check=True, capture_output=True, timeout=300)
        run = subprocess.run([sys.executable, "-c", extension_type], capture_output=True, text=True, cwd=tmp_path,
                             env={**os.environ, "PYTHONPATH": str(tmp_path), "NGM_COMPILED": "1"}, timeout=60)
        assert run.returncode == 0, run.stderr
        return run.stdout.split()

    declarations.write_text("cdef class KeyCache:\n    cdef public object _load, _ttl, _max, _known, _per_org, "
                            "_refused, _revoked, _digests, _loading, _generation\n")
    assert build_and_look() == ["True", "True"]
    declarations.unlink()
    assert build_and_look() == ["True", "False"]
