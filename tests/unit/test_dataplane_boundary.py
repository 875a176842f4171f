"""The data plane (ngm/dataplane) stands apart: importing all of it loads no workflow, store, model, channel or
Kailash module, and no .pxd of it takes C types from outside it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import ngm

DATAPLANE = Path(ngm.__file__).resolve().parent / "dataplane"
FORBIDDEN = re.compile(r"^(ngm\.(workflows|models|channels|context|nexus_app|server|background)"
                       r"|ngm\.nodes\..*\.(store|nodes)|kailash|dataflow|nexus|fastapi|starlette)(\.|$)")


def test_importing_the_data_plane_loads_nothing_of_the_control_plane():
    modules = sorted("ngm.dataplane." + ".".join(p.relative_to(DATAPLANE).with_suffix("").parts)
                     for p in DATAPLANE.rglob("*.py") if p.name != "__init__.py")
    assert len(modules) >= 15
    probe = (f"import importlib, json, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
             "print(json.dumps(sorted(sys.modules)))")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    loaded = json.loads(run.stdout)
    assert [m for m in loaded if FORBIDDEN.match(m)] == []
    assert set(modules) <= set(loaded)


def test_no_pxd_of_the_data_plane_takes_types_from_outside_it():
    for pxd in DATAPLANE.rglob("*.pxd"):
        for line in pxd.read_text().splitlines():
            found = re.match(r"\s*(?:from\s+(\S+)\s+)?cimport\s+(\S+)", line)
            if found:
                module = found.group(1) or found.group(2)
                assert module == "cython" or module.startswith("ngm.dataplane."), f"{pxd.name}: {line.strip()}"
