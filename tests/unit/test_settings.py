"""Settings.from_env: every value that does not parse stops the start with the variable's name."""

import pytest

from ngm.config import Settings

BASE = {"NGM_DATA_DIR": "/tmp/ngm-settings-test"}


@pytest.mark.parametrize("name, value, says", [
    ("NGM_AUTH_CACHE_SECONDS", "two", "is not a number"),
    ("NGM_AUTH_CACHE_SECONDS", "-1", "between 0 and 3600"),
    ("NGM_AUTH_CACHE_SECONDS", "nan", "finite"),
    ("NGM_MONITOR_CONCURRENCY", "lots", "is not a whole number"),
    ("NGM_MONITOR_CONCURRENCY", "0", "between 1 and 10000"),
    ("NGM_MONITOR_CONCURRENCY", "2.5", "is not a whole number"),
    ("NGM_MONITOR_LEASE_SECONDS", "inf", "finite"),
    ("NGM_HEALTH_HISTORY_DAYS", "7d", "is not a number"),
    ("NGM_WEBHOOK_MAX_ATTEMPTS", "0", "between 1 and 100"),
    ("NGM_API_RATE_LIMIT", "3k", "is not a whole number"),
    ("NGM_MONITOR", "maybe", "is not on or off"),
    ("NGM_LOG_LEVEL", "loud", "is not one of"),
    ("NGM_OUTBOUND_ALLOW", "10.0.0.0/8,not-a-net", "is not an address or CIDR"),
    ("NGM_TRUSTED_PROXIES", "300.1.1.1", "is not an address or CIDR"),
    ("NGM_HEALTH_HISTORY_DAYS", "1e308", "between 0 and 3650"),
    ("NGM_REDIS_URL", "notaurl", "must start with redis:// or rediss:// or unix://"),
    ("NGM_REDIS_URL", "redis://127.0.0.1:abc/9", "not a URL"),
    ("NGM_REDIS_URL", "redis://127.0.0.1:6379/abc", "the database number"),
    ("NGM_DATABASE_URL", "foo://bar", "must start with sqlite:// or postgresql:// or postgres://"),
])
def test_a_value_that_does_not_parse_is_refused_by_its_name(name, value, says):
    with pytest.raises(ValueError) as refused:
        Settings.from_env({**BASE, name: value})
    assert str(refused.value).startswith(f"{name}: ") and says in str(refused.value)


def test_values_that_parse_are_read_and_blanks_take_the_defaults():
    s = Settings.from_env({**BASE, "NGM_MONITOR": "off", "NGM_MONITOR_CONCURRENCY": " 32 ", "NGM_API_RATE_LIMIT": "0",
                           "NGM_AUTH_CACHE_SECONDS": "", "NGM_LOG_LEVEL": "debug"})
    assert (s.monitor_enabled, s.monitor_concurrency, s.api_rate_limit, s.auth_cache_seconds, s.log_level) == \
        (False, 32, 0, 2.0, "DEBUG")
    assert s.database_url == "sqlite:////tmp/ngm-settings-test/ngm.db"
