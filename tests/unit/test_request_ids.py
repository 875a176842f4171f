"""The request id both HTTP paths echo and log: the caller's when inert, else a fresh one."""

import re

from ngm.channels.http_middleware import request_id


def test_an_inert_caller_id_is_kept_and_anything_else_replaced():
    assert request_id(b"trace-1.a_B") == "trace-1.a_B"
    fresh = [request_id(bad) for bad in (None, b"", b"x" * 65, b"a\nforged line", b"a b", "é".encode())]
    assert all(re.fullmatch(r"[0-9a-f]{32}", rid) for rid in fresh) and len(set(fresh)) == len(fresh)
