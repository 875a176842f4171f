"""What every operation's input model shares.

- Unknown fields are refused; text may not hold NUL characters or unpaired surrogates (PostgreSQL and
  SQLite would each fail on them differently); floats must be finite. Each error names its field.
- `Partial` models are partial updates of one table: a field left out keeps its value, and null may clear
  only what the model of that table declares Optional (`ngm.models`); the JSON schema says so too.
- Every number has bounds, every string and list a bounded length (tests/unit/test_input_bounds.py holds
  every operation's schema to that).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationInfo, field_validator

from ngm.errors import ValidationFailed
from ngm.nodes.gateways import validation as v

MAX_OFFSET = 1_000_000_000
Offset = Annotated[int, Field(ge=0, le=MAX_OFFSET, description="records to skip")]
Cursor = Annotated[str, Field(min_length=1, max_length=2048, pattern=r"^[A-Za-z0-9_=-]+$")]
CURSOR_HELP = ("the next_cursor of the page before: the page after it (rows inserted or deleted meanwhile shift "
               "nothing); instead of offset")
LIMIT_HELP = "records per page (at most 500)"

# Shared shapes. A pattern in the description (json_schema_extra) tells clients what the validator checks;
# the validators' own messages stay the ones callers read.
_AGENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_VERSION = re.compile(r"^[\x21-\x7e]{1,64}$")
ID_PATTERN = r"^[A-Za-z0-9._~-]{1,128}$"  # every id ngm makes, and every agent id


def check_agent_id(value: str) -> str:
    if not _AGENT.fullmatch(value):
        raise ValueError("must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return value


def check_version(value: str) -> str:
    if not _VERSION.fullmatch(value):
        raise ValueError("must be 1-64 printable characters without spaces")
    return value


def _pattern(regex: str):
    return Field(json_schema_extra={"pattern": regex})


HttpUrl = Annotated[str, StringConstraints(max_length=2048), _pattern(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/.*)?$"),
                    AfterValidator(v.check_http_url)]
Region = Annotated[str, StringConstraints(max_length=64), _pattern(v.REGION_PATTERN), AfterValidator(v.check_region)]
AgentId = Annotated[str, StringConstraints(max_length=128), _pattern(_AGENT.pattern), AfterValidator(check_agent_id)]
Version = Annotated[str, StringConstraints(max_length=64), _pattern(r"^[!-~]{1,64}$"), AfterValidator(check_version)]


MAX_DEPTH = 16  # no input nests deeper than a list of strings; anything deeper is refused, not recursed into


def bad_text(value: Any) -> str | None:
    """Why a value cannot be taken whatever its type: text no database stores, or nesting beyond MAX_DEPTH.
    Walked without recursion (a deep value must not exhaust the stack of the code that refuses it)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "must not contain NUL characters"
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "must be valid Unicode text (no unpaired surrogates)"
        elif isinstance(item, (list, tuple, dict)):
            if depth >= MAX_DEPTH:
                return "is nested too deeply"
            children = (*item.keys(), *item.values()) if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return None


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _storable_text(cls, value):
        why = bad_text(value)
        if why:
            raise ValueError(why)
        return value


def _drop_null(schema: dict, names: frozenset[str]) -> None:
    for name, prop in schema.get("properties", {}).items():
        options = prop.get("anyOf")
        if name in names and options:
            kept = [o for o in options if o.get("type") != "null"]
            prop.pop("anyOf")
            if len(kept) == 1:
                prop.update(kept[0])
            else:
                prop["anyOf"] = kept
            if prop.get("default", 0) is None:
                prop.pop("default")


class Partial(Strict):
    """A partial update of the table named by the subclass keyword `table=`; `columns=` maps input fields to
    the columns they set where the names differ (e.g. api_key -> api_key_encrypted)."""

    not_null: ClassVar[frozenset[str]] = frozenset()
    table: ClassVar[str]
    column_of: ClassVar[dict[str, str]]

    def __init_subclass__(cls, table: str | None = None, columns: dict[str, str] | None = None, **kw):
        super().__init_subclass__(**kw)
        if table is None:
            return
        cls.table, cls.column_of = table, dict(columns or {})

    @classmethod
    def __pydantic_init_subclass__(cls, **kw):
        super().__pydantic_init_subclass__(**kw)
        table = getattr(cls, "table", None)
        if table is None:
            return
        from ngm.models import TABLES

        columns = TABLES[table].columns
        not_null = set()
        for name in cls.model_fields:
            column = cls.column_of.get(name, name)
            if column not in columns:  # every field must say where it goes, or the rule could miss it
                raise TypeError(f"{cls.__name__}.{name}: no column {column} in {table}; map it with columns=")
            if not columns[column].nullable:
                not_null.add(name)
        cls.not_null = frozenset(not_null)
        cls.model_config = {**cls.model_config,
                            "json_schema_extra": lambda schema, _: _drop_null(schema, cls.not_null)}
        cls.model_rebuild(force=True)

    @field_validator("*", mode="before")
    @classmethod
    def _null_only_where_optional(cls, value, info: ValidationInfo):
        if value is None and info.field_name in cls.not_null:
            raise ValueError("must not be null")
        return value


class Repeated(ValueError):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    out = {}
    for name, value in pairs:
        if name in out:  # {"name": "a", "name": "b"} means one thing to one reader and another to the next
            raise Repeated(name)
        out[name] = value
    return out


def parse_json(raw: bytes | str) -> Any:
    """A JSON document, or 422 naming the body (invalid UTF-8, invalid JSON, nesting too deep) or the field
    given twice."""
    try:
        return json.loads(raw, object_pairs_hook=unique_keys)
    except UnicodeDecodeError:
        message = "is not valid UTF-8"
    except RecursionError:
        message = "is nested too deeply"
    except Repeated as repeated:
        raise ValidationFailed.from_fields([{"field": repeated.name, "message": "is given twice"}]) from None
    except ValueError:
        message = "is not valid JSON"
    raise ValidationFailed.from_fields([{"field": "body", "message": message}])
