"""Which of ngm's modules run compiled (setup.py builds the router's hot path with Cython), and the guard that
never lets a compiled module run stale code.

Python imports an extension module in preference to the .py beside it, so after an edit (or a checkout) a
build from older source would silently run. The finder below loads a compiled module only when the sha256 of
the source beside it (and of its .pxd, if any, and of the modules whose C types that .pxd cimports) is the one
ngm/compiled.json recorded at its build; otherwise, or with NGM_COMPILED=0, it loads the source.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import re
import sys
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_MANIFEST = _PACKAGE / "compiled.json"
_CIMPORT = re.compile(rb"^\s*(?:from\s+(ngm[\w.]*)\s+cimport|cimport\s+(ngm[\w.]*))", re.M)


def source_digest(source: Path) -> str:
    """What a compiled module is built from: its .py, the .pxd that gives it C types when there is one, and
    what each module whose C types that .pxd cimports is built from. Such a module run as source (edited
    since its build) would hand this one a Python class where its C type is expected, so this one must run
    as source too. (setup.py records this at the build; loaded by path there, so nothing else may be
    imported here.)"""
    digest = hashlib.sha256(source.read_bytes())
    declarations = source.with_suffix(".pxd")
    if declarations.is_file():
        text = declarations.read_bytes()
        digest.update(text)
        for match in _CIMPORT.finditer(text):
            name = (match.group(1) or match.group(2)).decode()
            digest.update(source_digest(_PACKAGE.parent / (name.replace(".", "/") + ".py")).encode())
    return digest.hexdigest()


class _FreshBuildsOnly:
    """A meta path finder for ngm's submodules: a compiled one only if built from its current source."""

    def __init__(self, allow: bool):
        self.allow = allow
        try:
            self.built: dict[str, str] = json.loads(_MANIFEST.read_text())["modules"] if allow else {}
        except (OSError, ValueError, KeyError):
            self.built = {}
        self.compiled: list[str] = []  # loaded compiled
        self.stale: list[str] = []  # compiled but built from other source (or NGM_COMPILED=0): loaded as source

    def find_spec(self, name: str, path=None, target=None):
        if not name.startswith("ngm."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or not isinstance(spec.loader, importlib.machinery.ExtensionFileLoader):
            return spec
        source = Path(spec.origin or "").parent / (name.rpartition(".")[2] + ".py")
        if not source.is_file():
            return spec  # shipped compiled only: nothing else to run
        if self.allow and self.built.get(name) == source_digest(source):
            self.compiled.append(name)
            return spec
        self.stale.append(name)
        return importlib.util.spec_from_file_location(name, source)


_finder = _FreshBuildsOnly(allow=os.environ.get("NGM_COMPILED", "1").strip().lower() not in ("0", "false", "no", "off"))


def install() -> None:
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)


def status() -> dict:
    """For /readyz and the server's start line: how the hot path runs here."""
    return {"compiled": len(_finder.compiled), "as_source": sorted(_finder.stale),
            "disabled": not _finder.allow}
