"""Every operation's input, as a class: bounded numbers, strings and lists; text the databases can store; JSON
types taken as they are; null only where the model declares a field Optional. Walked over the registry, so
an operation or field added later is held to the same rules."""

import pytest

from ngm.errors import ValidationFailed
from ngm.models import TABLES
from ngm.workflows import load_operations
from ngm.workflows.executor import validate_input
from ngm.workflows.schema import Partial

OPERATIONS = [op for op in load_operations() if op.input_model is not None]


def _properties(op):
    schema = op.input_model.model_json_schema()
    return schema.get("properties", {}), schema.get("$defs", {})


def _variants(prop: dict, defs: dict):
    """The schema's alternatives, with $refs resolved."""
    if "$ref" in prop:
        prop = defs[prop["$ref"].rsplit("/", 1)[-1]]
    if "anyOf" in prop:
        for option in prop["anyOf"]:
            yield from _variants(option, defs)
    else:
        yield prop


def _unbounded(prop: dict, defs: dict) -> list[str]:
    out = []
    for variant in _variants(prop, defs):
        kind = variant.get("type")
        if "enum" in variant or "const" in variant:
            continue
        if kind in ("integer", "number") and ("maximum" not in variant or "minimum" not in variant):
            out.append(f"{kind} without minimum and maximum")
        if kind == "string" and "maxLength" not in variant and "format" not in variant:
            out.append("string without maxLength")
        if kind == "array":
            if "maxItems" not in variant:
                out.append("array without maxItems")
            out += _unbounded(variant.get("items", {}), defs)
    return out


@pytest.mark.parametrize("op", OPERATIONS, ids=lambda op: op.name)
def test_every_number_string_and_list_is_bounded(op):
    properties, defs = _properties(op)
    problems = {name: why for name, prop in properties.items() if (why := _unbounded(prop, defs))}
    assert problems == {}


@pytest.mark.parametrize("op", OPERATIONS, ids=lambda op: op.name)
def test_text_that_a_database_cannot_store_is_refused_in_every_field(op):
    properties, defs = _properties(op)
    for name, prop in properties.items():
        kinds = {v.get("type") for v in _variants(prop, defs)}
        for value in ("a\x00b", "a\ud800b"):
            bad = [value] if "array" in kinds else value
            if not kinds & {"string", "array"}:
                continue
            with pytest.raises(ValidationFailed) as info:
                validate_input(op, {name: bad}, "json")
            assert name in {d["field"] for d in info.value.details}, (name, info.value.details)


@pytest.mark.parametrize("op", OPERATIONS, ids=lambda op: op.name)
def test_json_numbers_are_numbers(op):
    """true is not 1 and "50" is not 50 in a JSON body; query strings (text by nature) are converted."""
    properties, defs = _properties(op)
    for name, prop in properties.items():
        kinds = {v.get("type") for v in _variants(prop, defs)}
        if not kinds & {"integer", "number"}:
            continue
        for value in (True, False, "50", "1e3"):
            with pytest.raises(ValidationFailed) as info:
                validate_input(op, {name: value}, "json")
            assert name in {d["field"] for d in info.value.details}, (name, value)
        for value in (1e400, float("nan")):
            with pytest.raises(ValidationFailed):
                validate_input(op, {name: value}, "python")


@pytest.mark.parametrize("op", OPERATIONS, ids=lambda op: op.name)
def test_json_booleans_are_booleans(op):
    properties, defs = _properties(op)
    for name, prop in properties.items():
        if {v.get("type") for v in _variants(prop, defs)} == {"boolean"} or (
                {v.get("type") for v in _variants(prop, defs)} == {"boolean", "null"}):
            for value in ("yes", "true", 1, 0):
                with pytest.raises(ValidationFailed) as info:
                    validate_input(op, {name: value}, "json")
                assert name in {d["field"] for d in info.value.details}


PARTIALS = [op for op in OPERATIONS if op.partial]


def test_every_partial_update_is_held_to_its_table():
    assert PARTIALS and all(issubclass(op.input_model, Partial) for op in PARTIALS)


@pytest.mark.parametrize("op", PARTIALS, ids=lambda op: op.name)
def test_null_clears_only_what_the_model_declares_optional(op):
    model = op.input_model
    columns = TABLES[model.table].columns
    for name in model.model_fields:
        nullable = columns[model.column_of.get(name, name)].nullable
        if nullable:
            assert validate_input(op, {name: None}, "json").model_dump(exclude_unset=True) == {name: None}
        else:
            with pytest.raises(ValidationFailed) as info:
                validate_input(op, {name: None}, "json")
            assert info.value.details == [{"field": name, "message": "must not be null"}]
        # and the published schema says the same
        prop = model.model_json_schema()["properties"][name]
        allows_null = any(v.get("type") == "null" for v in prop.get("anyOf", [prop]))
        assert allows_null == nullable, name


def test_offsets_beyond_any_database_integer_are_refused():
    for op in OPERATIONS:
        if "offset" in op.input_model.model_fields:
            for value in ("2147483648", "9223372036854775808", "-1"):
                with pytest.raises(ValidationFailed) as info:
                    validate_input(op, {"offset": value}, "query")
                assert info.value.details[0]["field"] == "offset"


@pytest.mark.parametrize("op_name", ["gateways_history", "agents_traffic"])
def test_windows_too_long_to_count_are_refused(op_name):
    op = next(op for op in OPERATIONS if op.name == op_name)
    kept_at_most = ("16m", "1h") if op_name == "agents_traffic" else ()  # traffic figures are kept 15 minutes
    for window in ("99999999999h", "9" * 40 + "d", "٣m", "0m", "31d", *kept_at_most):
        with pytest.raises(ValidationFailed) as info:
            validate_input(op, {"window": window}, "query")
        assert info.value.details[0]["field"] == "window"


@pytest.mark.parametrize("depth", [20, 300, 500, 900])
def test_deeply_nested_values_are_refused_naming_the_field(depth):
    op = next(op for op in OPERATIONS if op.name == "route_explain")
    value = "x"
    for _ in range(depth):
        value = [value]
    with pytest.raises(ValidationFailed) as info:
        validate_input(op, {"agent_id": value}, "json")
    assert info.value.details == [{"field": "agent_id", "message": "is nested too deeply"}]


@pytest.mark.parametrize("since", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
def test_times_with_no_utc_equivalent_are_refused(since):
    op = next(op for op in OPERATIONS if op.name == "events_list")
    for source in ("query", "json"):
        with pytest.raises(ValidationFailed) as info:
            validate_input(op, {"since": since}, source)
        assert [d["field"] for d in info.value.details] == ["since"]
