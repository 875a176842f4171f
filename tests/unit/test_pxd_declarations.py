"""Every .pxd beside a data-plane module declares exactly the fields its .py class sets, in the order the .py
sets them (a dataclass's declared order is its __init__'s when compiled; a field the .pxd forgets fails only
once compiled, as an AttributeError on a slot that does not exist)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import ngm

DATAPLANE = Path(ngm.__file__).resolve().parent / "dataplane"
PXDS = sorted(DATAPLANE.rglob("*.pxd"))


def declared_fields(pxd_text: str) -> dict[str, list[str]]:
    """cdef class name -> its attribute names in declaration order (methods and forward declarations left out)."""
    classes: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in pxd_text.splitlines():
        header = re.match(r"cdef class (\w+):", line)
        if header:
            current = classes.setdefault(header.group(1), [])
        elif current is not None and re.match(r"\s+cdef (public |readonly )?", line) and "(" not in line:
            names = re.sub(r"\s+cdef (public |readonly )?", "", line).split("#")[0].split(",")
            current.extend([names[0].split()[-1], *(n.strip() for n in names[1:])])
        elif line and not line.startswith((" ", "#")):
            current = None
    return classes


def set_fields(tree: ast.Module, name: str) -> list[str]:
    """The fields a .py class sets: a dataclass's annotated ones, else its __slots__, else every `self.x =` of
    its methods in the order they first appear."""
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == name)
    if any("dataclass" in ast.unparse(d) for d in cls.decorator_list):
        return [s.target.id for s in cls.body if isinstance(s, ast.AnnAssign)]
    for s in cls.body:
        if isinstance(s, ast.Assign) and any(getattr(t, "id", "") == "__slots__" for t in s.targets):
            return [e.value for e in s.value.elts]
    stores = sorted((n.lineno, n.col_offset, n.attr) for f in cls.body if isinstance(f, ast.FunctionDef)
                    for n in ast.walk(f) if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store)
                    and getattr(n.value, "id", "") == "self")
    return list(dict.fromkeys(attr for _, _, attr in stores))  # in source order, each once


def test_there_are_declarations_to_check():
    assert len(PXDS) >= 10


@pytest.mark.parametrize("pxd", PXDS, ids=lambda p: str(p.relative_to(DATAPLANE)))
def test_each_cdef_class_declares_what_its_python_class_sets_in_its_order(pxd):
    tree = ast.parse(pxd.with_suffix(".py").read_text())
    for name, declared in declared_fields(pxd.read_text()).items():
        assert declared == set_fields(tree, name), f"{pxd.name}: class {name}"


def test_the_reader_sees_a_missing_and_a_misordered_field():
    tree = ast.parse("class A:\n    def __init__(self):\n        self.a = 1\n        self.b = 2\n        self.c = 3\n")
    assert declared_fields("cdef class A:\n    cdef public object a, b\n")["A"] != set_fields(tree, "A")
    assert declared_fields("cdef class A:\n    cdef public object a, c\n    cdef int b\n")["A"] != set_fields(tree, "A")
    assert declared_fields("cdef class A:\n    cdef public object a\n    cdef int b\n    cdef object c\n")["A"] == \
        set_fields(tree, "A")
