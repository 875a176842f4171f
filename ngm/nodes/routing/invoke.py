"""What an invoke request is, /api/v1/agents/{agent_id}/invoke/{path}: its path, its body's limit, and the
refusal answered in its stead. Apart from the router so that the server's protocol (ngm/channels/agent_http.py)
and the router each import it, and the compiled router can take the protocol's request type."""

from __future__ import annotations

PREFIX = "/api/v1/agents/"
MAX_BODY = 10 * 1024 * 1024


def parse_invoke_path(path: str) -> tuple[str, str] | None:
    """'/api/v1/agents/bot/invoke/a/b' -> ('bot', '/a/b'); None when not an invoke path."""
    if not path.startswith(PREFIX):
        return None
    agent, sep, rest = path[len(PREFIX):].partition("/invoke")
    if not agent or not sep or "/" in agent or (rest and not rest.startswith("/")):
        return None
    return agent, rest or "/"


def upstream_target(raw_path: bytes, query: bytes) -> bytes:
    """The gateway's request target: the path after /invoke and the query exactly as the caller sent them
    (percent-encoding intact)."""
    rest = raw_path[len(PREFIX):].partition(b"/invoke")[2] or b"/"
    return rest + b"?" + query if query else rest


class Refusal(Exception):
    def __init__(self, status: int, code: str, message: str, details=None, headers: list | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details, self.headers = status, code, message, details, headers
