"""The request id both HTTP paths echo and log (the caller's when inert, else a fresh one), and the access line."""

import calendar
import io
import re
import time

from ngm.dataplane.access_log import AccessLog
from ngm.dataplane.edge import request_id
from ngm.nodes.auth.keys import Principal


def test_an_inert_caller_id_is_kept_and_anything_else_replaced():
    assert request_id(b"trace-1.a_B") == "trace-1.a_B"
    fresh = [request_id(bad) for bad in (None, b"", b"x" * 65, b"a\nforged line", b"a b", "é".encode(), b"trace-2\n")]
    assert all(re.fullmatch(r"[0-9a-f]{32}", rid) for rid in fresh) and len(set(fresh)) == len(fresh)


def test_access_lines_are_formatted_when_written_with_the_time_each_request_ended():
    """A request leaves its fields (the path as bytes from agent traffic, as text from the ASGI app); the line
    is made when the batch is written, stamped with when the request ended, not when it was written."""
    log, stream = AccessLog(), io.StringIO()
    log.configure(stream, True)
    started = time.perf_counter() - 0.0123
    log.add(("10.0.0.7", 5555), "GET", b"/api/v1/agents/bot/invoke/caf%C3%A9", 200, started,
            Principal("org", "org_member", "key_abc"), "rid-1")
    log.add(None, "POST", "/api/v1/gateways", 401, started, None, "rid-2")
    ended = time.time()
    time.sleep(0.3)
    log.flush()
    first, second = stream.getvalue().splitlines()
    line = re.fullmatch(r'(\S+)T(\S+)\.(\d{3})Z INFO ngm\.access 10\.0\.0\.7 '
                        r'"GET /api/v1/agents/bot/invoke/caf%C3%A9" 200 ([\d.]+)ms key=key_abc rid=rid-1', first)
    assert line, first
    assert 12.0 <= float(line[4]) < 300  # from start to add(), not to flush()
    stamp = calendar.timegm(time.strptime(f"{line[1]}T{line[2]}", "%Y-%m-%dT%H:%M:%S")) + int(line[3]) / 1000
    assert abs(stamp - ended) < 0.1  # when the request ended (0.3 s before the write), in UTC
    assert re.fullmatch(r'\S+ INFO ngm\.access - "POST /api/v1/gateways" 401 [\d.]+ms key=- rid=rid-2', second)
    log.flush()
    assert len(stream.getvalue().splitlines()) == 2  # written once
