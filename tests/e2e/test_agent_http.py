"""Agent traffic is served on the connection by ngm's own protocol (ngm/dataplane/protocol.py), past the
ASGI app: HTTP/1.1 framing, keep-alive, pipelining, 100-continue, HEAD, HTTP/1.0 and cut answers, byte by
byte over a real socket to `ngm serve`, with a scripted gateway behind it."""

from __future__ import annotations

import json
import select
import socket
import time
import uuid

import pytest

from tests.support.scripted import ScriptedServer, ok

pytestmark = pytest.mark.e2e
HEALTH = ok(b'{"status": "healthy", "workflows": {}}', b"Content-Type: application/json\r\n")
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"


def answer(script):
    """A gateway answering /health itself and everything else by `script(head)`."""
    return ScriptedServer(lambda head, n: [HEALTH] if b" /health" in head.split(b"\r\n")[0] else script(head))


@pytest.fixture
def agent(deployment):
    """Deploy an agent on a scripted gateway: yields (set_script, path, key, gateway)."""
    org, key = deployment.new_org()
    scripts = {"now": lambda head: [ok(b"hello")]}
    gateway = answer(lambda head: scripts["now"](head))
    name = f"bot-{uuid.uuid4().hex[:6]}"
    with deployment.client(key) as c:
        gw = c.post("/api/v1/gateways", json={"name": name, "environment": "production",
                                              "api_url": f"http://127.0.0.1:{gateway.port}", "api_key": "gw-secret",
                                              "request_timeout": 2})
        assert gw.status_code == 201, gw.text
        assert c.post("/api/v1/deployments", json={"gateway_id": gw.json()["id"], "agent_id": name,
                                                   "agent_version": "1"}).status_code == 201
        deadline = time.monotonic() + 5  # the routing table follows within a second
        while c.get(f"/api/v1/agents/{name}/invoke/x").status_code == 404 and time.monotonic() < deadline:
            time.sleep(0.1)

    def set_script(fn):
        scripts["now"] = fn

    yield set_script, f"/api/v1/agents/{name}/invoke", key, gateway
    gateway.stop()


def connect(deployment) -> socket.socket:
    host, port = deployment.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def read_response(stream, head_only: bool = False) -> tuple[int, dict, bytes]:
    status = int(stream.readline().split()[1])
    headers = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if head_only or status in (100, 204, 304):
        return status, headers, b""
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while size := int(stream.readline().strip(), 16):
            body += stream.read(size)
            stream.readline()
        stream.readline()
        return status, headers, body
    if "content-length" in headers:
        return status, headers, stream.read(int(headers["content-length"]))
    return status, headers, stream.read()


def request(path: str, key: str, method: str = "GET", extra: str = "", body: bytes = b"",
            version: str = "1.1") -> bytes:
    length = f"Content-Length: {len(body)}\r\n" if body or method == "POST" else ""
    return (f"{method} {path} HTTP/{version}\r\nHost: t\r\nX-API-Key: {key}\r\n{length}{extra}\r\n").encode() + body


def test_keep_alive_and_pipelining_mixed_with_the_management_api(deployment, agent):
    set_script, path, key, gateway = agent
    set_script(lambda head: [ok(head.split(b" ")[1])])  # echoes the path it was asked for
    with connect(deployment) as s, s.makefile("rb") as stream:
        s.sendall(request(f"{path}/one", key) + request("/api/v1/keys/me", key) + request(f"{path}/two", key))
        first, me, second = read_response(stream), read_response(stream), read_response(stream)
        assert (first[0], first[2]) == (200, b"/one") and (second[0], second[2]) == (200, b"/two")
        assert me[0] == 200 and json.loads(me[2])["role"] == "org_owner"
        assert first[1]["x-request-id"] != second[1]["x-request-id"] and "date" in first[1]
        s.sendall(request(f"{path}/three", key))  # the same connection, still open
        assert read_response(stream)[2] == b"/three"


def test_request_targets_reach_the_gateway_as_sent_every_time(deployment, agent):
    """Targets are parsed once and remembered: asked again (and after other targets), each must still reach
    the gateway exactly as the caller wrote it, and a path under /api/v1/agents/ that is no invoke path must
    still go to the management API."""
    set_script, path, key, _ = agent
    set_script(lambda head: [ok(head.split(b" ")[1])])
    agent_id = path.split("/")[4]
    # (an encoded slash would be refused: tests/e2e/test_hostile_input.py)
    targets = ["/a%20b/c?x=1&y=%20z", "/a%20b/c", "?only=query", "/caf%C3%A9/", "/a%20b/c?x=2", "/a%2Cb?q=%2F"]
    with connect(deployment) as s, s.makefile("rb") as stream:
        for _ in range(2):
            for target in targets:
                s.sendall(request(f"{path}{target}", key))
                status, _, body = read_response(stream)
                assert (status, body) == (200, (target if target.startswith("/") else "/" + target).encode())
            s.sendall(request(f"/api/v1/agents/{agent_id}/traffic", key))
            status, headers, body = read_response(stream)
            assert status == 200 and "x-ngm-deployment" not in headers and "deployments" in json.loads(body)


def test_refusals_and_forwarded_answers_to_a_pipelining_caller_come_in_its_order(deployment, agent):
    """Refusals are written at the end of the loop's turn, forwarded answers when the gateway has answered:
    neither may overtake the other on the caller's connection."""
    set_script, path, key, _ = agent
    set_script(lambda head: [ok(head.split(b" ")[1])])
    with connect(deployment) as s, s.makefile("rb") as stream:
        s.sendall(request(f"{path}/a", "ngm_wrong") + request(f"{path}/b", key)
                  + request(f"{path}/c", key, extra="X-NGM-Environment: moon\r\n") + request(f"{path}/d", key))
        answers = [read_response(stream) for _ in range(4)]
        assert [a[0] for a in answers] == [401, 200, 422, 200]
        assert (answers[1][2], answers[3][2]) == (b"/b", b"/d")


def test_a_caller_that_half_closes_after_its_request_still_gets_the_refusal(deployment, agent):
    """A caller may send its request and its end of stream at once (one segment here): the refusal, held
    to the end of the loop's turn, must still reach it before the connection closes."""
    _, path, _, _ = agent
    for _ in range(5):
        with connect(deployment) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)  # the request and the FIN in one segment
            s.sendall(request(path, "ngm_wrong"))
            s.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := s.recv(65536):
                received += chunk
            assert received.startswith(b"HTTP/1.1 401 "), received


def test_a_caller_asking_for_connection_close_gets_the_whole_answer_then_the_close(deployment, agent):
    """Not kept alive, the connection closes as the answer ends: what waits for the end of the loop's turn
    must be sent before the close, or the caller gets nothing."""
    set_script, path, key, _ = agent
    set_script(lambda head: [ok(b"hello")])
    for presented, status, body in ((key, 200, b"hello"), ("ngm_wrong", 401, None)):
        with connect(deployment) as s:
            s.sendall(request(path, presented, extra="Connection: close\r\n"))
            received = b""
            while chunk := s.recv(65536):  # to the end: the server closes
                received += chunk
            head, _, rest = received.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 %d " % status) and b"connection: close" in head.lower()
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            assert len(rest) == length and (body is None or rest == body)


KEEP_ALIVE_SECONDS = 5  # uvicorn's timeout_keep_alive, which ngm serve keeps


def test_an_idle_connection_is_closed_after_the_keep_alive_period_from_its_last_answer(deployment, agent):
    _, path, key, _ = agent
    with connect(deployment) as idle, connect(deployment) as busy, busy.makefile("rb") as busy_stream:
        idle.sendall(request(path, key))
        assert idle.recv(65536).startswith(b"HTTP/1.1 200")
        busy.sendall(request(path, key))
        assert read_response(busy_stream)[0] == 200
        answered = time.monotonic()
        idle_closed_after = None
        for step in range(1, 17):  # 8 s; the busy one asks every 2 s, past the period counted from its first answer
            time.sleep(0.5)
            if idle_closed_after is None and select.select([idle], [], [], 0)[0]:
                assert idle.recv(65536) == b""  # closed, nothing else sent
                idle_closed_after = time.monotonic() - answered
            if step % 4 == 0:
                busy.sendall(request(path, key))
                assert read_response(busy_stream)[0] == 200
        assert idle_closed_after is not None and KEEP_ALIVE_SECONDS - 0.5 < idle_closed_after < KEEP_ALIVE_SECONDS + 1.5
        last_answer = time.monotonic()
        assert busy_stream.read() == b""  # now idle, it is closed too (the socket's own timeout is 10 s)
        assert KEEP_ALIVE_SECONDS - 0.5 < time.monotonic() - last_answer < KEEP_ALIVE_SECONDS + 1.5


def test_expect_100_continue_then_the_body(deployment, agent):
    _, path, key, gateway = agent
    with connect(deployment) as s, s.makefile("rb") as stream:
        s.sendall(request(f"{path}/post", key, "POST", "Expect: 100-continue\r\nContent-Length: 5\r\n")
                  .replace(b"Content-Length: 0\r\n", b""))
        assert read_response(stream)[0] == 100
        s.sendall(b"hello")
        assert read_response(stream)[:3:2] == (200, b"hello")
    sent = [r for r in gateway.requests if b"/post" in r][0]
    assert sent.endswith(b"\r\n\r\nhello") and b"expect" not in sent.lower()  # the body went in one go


def test_chunked_answers_and_an_http_1_0_caller(deployment, agent):
    set_script, path, key, _ = agent
    set_script(lambda head: [CHUNKED])
    with connect(deployment) as s, s.makefile("rb") as stream:
        s.sendall(request(path + "/c", key))
        status, headers, body = read_response(stream)
        assert (status, headers["transfer-encoding"], body) == (200, "chunked", b"hello world")
    with connect(deployment) as s, s.makefile("rb") as stream:  # HTTP/1.0 knows no chunks: ends with the connection
        s.sendall(request(path + "/c", key, version="1.0"))
        status, headers, body = read_response(stream)
        assert (status, body, headers.get("connection")) == (200, b"hello world", "close")
        assert "transfer-encoding" not in headers and stream.read() == b""


def test_head_answers_carry_no_body_and_the_connection_goes_on(deployment, agent):
    set_script, path, key, _ = agent
    set_script(lambda head: [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
                             + (b"" if head.startswith(b"HEAD") else b"hello")])
    with connect(deployment) as s, s.makefile("rb") as stream:
        s.sendall(request(path, key, "HEAD"))
        status, headers, _ = read_response(stream, head_only=True)
        assert (status, headers["content-length"]) == (200, "5")
        s.sendall(request(path, key))
        assert read_response(stream)[2] == b"hello"


def test_an_answer_cut_by_the_gateway_is_cut_for_the_caller(deployment, agent):
    set_script, path, key, _ = agent
    for cut in ([b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial", 0.05, "close"],
                [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\npartial\r\n", 0.05, "close"]):
        set_script(lambda head, cut=cut: cut)
        with connect(deployment) as s:
            s.sendall(request(path, key))
            received = b""
            while chunk := s.recv(65536):
                received += chunk
            assert b"partial" in received and not received.endswith(b"0\r\n\r\n")  # never looks complete
            assert len(received.partition(b"\r\n\r\n")[2]) < 100


def test_a_body_over_the_limit_is_refused_and_the_connection_closed(deployment, agent):
    _, path, key, gateway = agent
    size = 10 * 1024 * 1024 + 1
    with connect(deployment) as s, s.makefile("rb") as stream:
        s.sendall(request(path + "/big", key, "POST", f"Content-Length: {size}\r\n").replace(b"Content-Length: 0\r\n",
                                                                                              b""))
        try:
            s.sendall(b"x" * size)
        except OSError:
            pass  # the server may close before the whole body is in
        status, headers, body = read_response(stream)
        assert status == 413 and json.loads(body)["error"]["code"] == "body_too_large"
        assert headers["connection"] == "close"
    assert not any(b"/big" in r for r in gateway.requests)


def test_a_caller_leaving_mid_answer_frees_the_deployment(deployment, agent):
    set_script, path, key, _ = agent
    chunk = b"x" * 65536
    set_script(lambda head: [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (1000 * len(chunk))]
               + [chunk] * 1000)
    with connect(deployment) as s:
        s.sendall(request(path, key))
        s.recv(1000)
    set_script(lambda head: [ok(b"after")])
    with connect(deployment) as s, s.makefile("rb") as stream:
        s.sendall(request(path, key))
        assert read_response(stream)[2] == b"after"
    agent_id = path.split("/")[4]
    with deployment.client(key) as c:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            [row] = c.get(f"/api/v1/agents/{agent_id}/traffic").json()["deployments"]
            if row["in_flight"] == 0:
                break
            time.sleep(0.1)
        assert row["in_flight"] == 0


def test_a_caller_leaving_mid_body_sends_nothing_upstream(deployment, agent):
    _, path, key, gateway = agent
    with connect(deployment) as s:
        s.sendall(request(path + "/half", key, "POST", "Content-Length: 100\r\n").replace(b"Content-Length: 0\r\n",
                                                                                           b"") + b"x" * 10)
        time.sleep(0.2)
    time.sleep(0.5)
    assert not any(b"/half" in r for r in gateway.requests)
    assert f'"POST {path}/half" 499' in deployment.server.log()  # logged as the caller leaving
    with connect(deployment) as s, s.makefile("rb") as stream:  # and the server goes on
        s.sendall(request(path, key))
        assert read_response(stream)[0] == 200


def test_a_streamed_answer_s_head_is_not_held_back_for_its_body(deployment, agent):
    set_script, path, key, _ = agent
    set_script(lambda head: [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 5.0,
                             b"5\r\nlater\r\n0\r\n\r\n"])
    with connect(deployment) as s, s.makefile("rb") as stream:
        start = time.monotonic()
        s.sendall(request(path, key))
        # the body comes 5 s after the head: the head, well before
        assert stream.readline().startswith(b"HTTP/1.1 200") and time.monotonic() - start < 3.0
        while stream.readline() != b"\r\n":
            pass
        assert stream.readline() == b"5\r\n" and stream.readline() == b"later\r\n"
        assert time.monotonic() - start >= 4.9


def get_twice_on_one_connection(deployment, path, key) -> list[tuple[int, dict, bytes]]:
    """Two requests, one after the other, on one caller connection: the first leaves the router a kept-alive
    connection to the gateway, which the second is sent on (the router's path without a coroutine)."""
    with connect(deployment) as s, s.makefile("rb") as stream:
        answers = []
        for _ in range(2):
            s.sendall(request(path, key))
            answers.append(read_response(stream))
        return answers


def test_a_gateway_that_does_not_answer_in_time_gets_504_on_new_and_kept_alive_connections(deployment, agent):
    set_script, path, key, _ = agent
    answers = iter([[ok(b"warm")], ["hold"], ["hold"]])
    set_script(lambda head: next(answers))
    with connect(deployment) as s, s.makefile("rb") as stream:
        s.sendall(request(path, key))
        assert read_response(stream)[2] == b"warm"
        for _ in range(2):  # on the kept-alive connection, then (that one closed) on a new one
            start = time.monotonic()
            s.sendall(request(path, key))
            status, headers, body = read_response(stream)
            assert status == 504 and json.loads(body)["error"]["code"] == "gateway_timeout", body
            assert 1.9 <= time.monotonic() - start < 4  # request_timeout: 2 s
            assert headers["x-request-id"]
    set_script(lambda head: [ok(b"back")])
    assert [a[2] for a in get_twice_on_one_connection(deployment, path, key)] == [b"back", b"back"]


def test_a_kept_alive_connection_the_gateway_closed_is_replaced_without_the_caller_noticing(deployment, agent):
    set_script, path, key, gateway = agent
    served: dict[int, int] = {}

    def one_answer_per_connection(head, connection):  # then it closes without answering, as an idle timeout does
        served[connection] = served.get(connection, 0) + 1
        return [ok(b"fresh")] if served[connection] == 1 else ["close"]

    gateway.script = lambda head, n: [HEALTH] if b" /health" in head.split(b"\r\n")[0] else \
        one_answer_per_connection(head, n)
    for method in ("GET", "POST"):
        with connect(deployment) as s, s.makefile("rb") as stream:
            for _ in range(3):
                s.sendall(request(path, key, method))
                status, _, body = read_response(stream)
                assert (status, body) == (200, b"fresh")
    # each request after the first found its connection closed and was sent again on a new one
    assert sorted(served.values()) == [1, 2, 2, 2, 2, 2]


def test_a_gateway_answering_what_is_not_http_gets_502(deployment, agent):
    set_script, path, key, gateway = agent
    answers = iter([[ok(b"warm")], [b"SSH-2.0-OpenSSH_9.2\r\n\r\n"], [b"SSH-2.0-OpenSSH_9.2\r\n\r\n"]])
    set_script(lambda head: next(answers))
    with connect(deployment) as s, s.makefile("rb") as stream:
        s.sendall(request(path, key))
        assert read_response(stream)[2] == b"warm"
        for _ in range(2):  # on the kept-alive connection, then on a new one
            s.sendall(request(path, key))
            status, _, body = read_response(stream)
            assert status == 502 and json.loads(body)["error"]["code"] == "gateway_bad_answer", body
    set_script(lambda head: [ok(b"back")])
    assert [a[2] for a in get_twice_on_one_connection(deployment, path, key)] == [b"back", b"back"]
