import pytest
from pydantic import ValidationError

from ngm.errors import ValidationFailed
from ngm.nodes.gateways import validation as v
from ngm.workflows import load_operations
from ngm.workflows.executor import field_errors, validate_input
from ngm.workflows.gateway_schemas import GatewayCreate, GatewayListQuery, GatewayUpdate

BASE = {"name": "gw", "environment": "production", "api_url": "https://gw.example.com"}


def errors_of(model, data) -> dict:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return {e["field"]: e["message"] for e in field_errors(info.value.errors())}


@pytest.mark.parametrize("url", ["http://a", "https://gw.example.com:8443/base", "http://127.0.0.1:9000",
                                 "http://[::1]:80/x?y=1", "https://bücher.example/x", "http://GW.Example.COM"])
def test_http_urls_accepted_exactly_as_sent(url):
    assert v.check_http_url(url) == url


@pytest.mark.parametrize("url", ["http://0.0.0.\U0001FBF0:9/", "http://169.254.169.25\U0001FBF4/latest",
                                 "http://127.0.0.1\uff3b:8080/", "http://10.0.0.\U0001FBF5/"])
def test_hosts_that_python_and_aiohttp_read_differently_are_refused(url):
    """Python's IDNA (2003) makes a name of what yarl (UTS 46) reads as digits: the write-time address checks
    would judge a host other than the one a probe or webhook connects to."""
    with pytest.raises(ValueError, match="must name its host in a form every HTTP client reads alike"):
        v.check_http_url(url)


@pytest.mark.parametrize("url, message", [
    ("ftp://gw", "must be an http:// or https:// URL"),
    ("gw.example.com", "must be an http:// or https:// URL"),
    ("https://", "must include a host"),
    ("https://user:pw@gw", "must not embed credentials; set api_key instead"),
    ("http://gw:99999", "is not a valid URL"),
    ("http://gw:0", "port must be between 1 and 65535"),
    ("http://gw/a b", "must not contain spaces or control characters"),
    ("http://gw/\r\nX: y", "must not contain spaces or control characters"),
    ("http://gw/#frag", "must not contain a fragment"),
])
def test_bad_urls_rejected_with_reason(url, message):
    with pytest.raises(ValueError, match=message):
        v.check_http_url(url)


def test_create_requires_name_environment_and_api_url():
    assert errors_of(GatewayCreate, {}) == {"name": "is required", "environment": "is required",
                                            "api_url": "is required"}


@pytest.mark.parametrize("field, value, message", [
    ("name", "", "must not be empty"),
    ("name", "   ", "must not be empty"),
    ("name", "a\x00b", "must not contain NUL characters"),  # every text field: storable on both databases
    ("name", "a\x07b", "must not contain control characters"),
    ("name", "x" * 201, "String should have at most 200 characters"),
    ("environment", "prod", "Input should be 'development', 'staging' or 'production'"),
    ("gateway_type", "public", "Input should be 'shared', 'dedicated' or 'private'"),
    ("status", "error", "Input should be 'active', 'inactive' or 'provisioning'"),
    ("api_port", 0, "Input should be greater than or equal to 1"),
    ("api_port", 65536, "Input should be less than or equal to 65535"),
    ("mcp_port", -1, "Input should be greater than or equal to 1"),
    ("min_instances", -1, "Input should be greater than or equal to 0"),
    ("global_rate_limit", -5, "Input should be greater than or equal to 0"),
    ("per_user_rate_limit", "many", "Input should be a valid integer, unable to parse string as an integer"),
    ("auth_methods", ["api_key", "api_key"], "must not repeat a value"),
    ("region", "eu west", "must be 1-64 letters, digits, '.', '_' or '-' (e.g. eu-west-1)"),
    ("api_key", "has space", "must be printable ASCII without spaces"),
    ("api_key", "line\nbreak", "must be printable ASCII without spaces"),
    ("health_check_url", "gopher://x", "must be an http:// or https:// URL"),
    ("bogus", 1, "unknown field"),
])
def test_create_field_errors_name_the_field(field, value, message):
    assert errors_of(GatewayCreate, {**BASE, field: value}) == {field: message}


def test_list_element_errors_name_the_element():
    assert errors_of(GatewayCreate, {**BASE, "auth_methods": ["api_key", "nope"]}) == {
        "auth_methods.1": "Input should be 'api_key', 'jwt', 'oauth2' or 'mtls'"}


def test_update_accepts_partial_input_and_keeps_what_was_sent():
    upd = GatewayUpdate.model_validate({"description": None, "max_instances": 4})
    assert upd.model_dump(exclude_unset=True) == {"description": None, "max_instances": 4}


def test_update_refuses_null_for_required_fields():
    assert errors_of(GatewayUpdate, {"name": None, "environment": None}) == {
        "name": "must not be null", "environment": "must not be null"}


def test_list_query_bounds():
    assert errors_of(GatewayListQuery, {"limit": 0, "offset": -1}) == {
        "limit": "Input should be greater than or equal to 1", "offset": "Input should be greater than or equal to 0"}
    assert errors_of(GatewayListQuery, {"limit": 501}) == {"limit": "Input should be less than or equal to 500"}


@pytest.mark.parametrize("record, expected", [
    ({"min_instances": 3, "max_instances": 2},
     [{"field": "min_instances", "message": "must be less than or equal to max_instances (2)"}]),
    ({"min_instances": 2, "max_instances": 2}, []),
    ({"auth_methods": ["jwt"], "jwt_issuer": None},
     [{"field": "jwt_issuer", "message": "is required when auth_methods includes jwt"}]),
    ({"auth_methods": ["jwt"], "jwt_issuer": "https://issuer"}, []),
    ({"api_url": "http://gw:8000", "api_port": 9000},
     [{"field": "api_port", "message": "conflicts with the port in api_url (8000)"}]),
    ({"api_url": "http://gw:8000", "api_port": 8000}, []),
])
def test_consistency_rules(record, expected):
    assert v.consistency_errors(record) == expected


@pytest.mark.parametrize("record, url", [
    ({"api_url": "http://gw/"}, "http://gw/health"),
    ({"api_url": "http://gw", "api_port": 8080}, "http://gw:8080/health"),
    ({"api_url": "http://gw:81/api/", "api_port": 81}, "http://gw:81/api/health"),
    ({"api_url": "http://gw", "health_check_url": "http://gw/readyz"}, "http://gw/readyz"),
])
def test_health_url(record, url):
    assert v.health_url(record) == url


def test_validation_errors_never_echo_the_rejected_value():
    ops = load_operations()
    with pytest.raises(ValidationFailed) as info:
        validate_input(ops.get("gateways_create"), {**BASE, "api_key": "topsecret value"})
    assert "topsecret" not in str(info.value.to_body())


def test_unknown_input_for_an_operation_without_input_is_refused():
    with pytest.raises(ValidationFailed) as info:
        validate_input(load_operations().get("gateways_get"), {"force": True})
    assert info.value.details == [{"field": "force", "message": "unknown field"}]


# A value ending in a line feed passed `re.match(r"^...$")` ($ matches before a final \n) and reached the gateway
# as a broken header line (x-api-key, x-ngm-agent): every pattern is matched against the whole value.
@pytest.mark.parametrize("op, body, field", [
    ("gateways_create", {"name": "g", "environment": "production", "api_url": "https://a.example.com",
                         "api_key": "CAPK-0123456789\n"}, "api_key"),
    ("gateways_create", {"name": "g", "environment": "production", "api_url": "https://a.example.com",
                         "region": "eu-west-1\n"}, "region"),
    ("gateways_create", {"name": "g", "environment": "production", "api_url": "https://a.example.com\n"}, "api_url"),
    ("deployments_create", {"gateway_id": "g1", "agent_id": "bot\n", "agent_version": "v1"}, "agent_id"),
    ("deployments_create", {"gateway_id": "g1", "agent_id": "bot", "agent_version": "v1\n"}, "agent_version"),
    ("routing_set", {"agent_id": "bot", "environment": "production", "sticky_header": "X-Key\n"}, "sticky_header"),
    ("ratelimits_check", {"agent_id": "bot", "environment": "production", "key_id": "key_1\n"}, "key_id"),
    ("agents_traffic", {"window": "5m\n"}, "window"),
])
def test_a_trailing_line_feed_is_refused_by_the_field(op, body, field):
    operation = next(o for o in load_operations() if o.name == op)
    with pytest.raises(ValidationFailed) as refused:
        validate_input(operation, body, "json")
    assert refused.value.field == field, refused.value.details
