"""The access log: one line per request, of agent traffic and of the management API, written in batches past
the logging machinery (ngm/config/logging.py sets it up with the rest of logging)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import TextIO, TypeAlias

    from ngm.nodes.auth.keys import Principal

    # what add() leaves for a line: (its end, started, client, method, path, status, principal, rid)
    _Line: TypeAlias = tuple[float, float, tuple[str, int] | None, str, str | bytes, int, Principal | None, str]

_last_stamp = (-1, "")  # (second, its text)
_last_ms_stamp = (-1, "")  # (millisecond, its whole stamp): the access log writes dozens of lines a millisecond


def utc_stamp(created: float) -> str:
    """2026-11-23T12:00:00.123Z; one strftime a second and one format a millisecond, not one a line (the access
    log is on the hot path)."""
    global _last_stamp, _last_ms_stamp
    ms = int(created * 1000)
    if ms == _last_ms_stamp[0]:
        return _last_ms_stamp[1]
    second = ms // 1000
    if second != _last_stamp[0]:
        _last_stamp = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    _last_ms_stamp = (ms, f"{_last_stamp[1]}.{ms - second * 1000:03d}Z")
    return _last_ms_stamp[1]



class AccessLog:
    """One line per request, on the hot path of agent traffic: a request leaves its fields and the time, and
    lines are formatted like every other log line (cached timestamp) and written to the log stream in batches,
    at most 50 ms late, past the logging machinery, which costs more per line than forwarding a small request
    does."""

    FLUSH_AFTER = 0.05

    def __init__(self) -> None:
        self.stream, self.enabled = None, False  # type: TextIO | None, bool
        self._lines: list[_Line] = []

    def configure(self, stream: TextIO, enabled: bool) -> None:
        self.flush()
        self.stream, self.enabled = stream, enabled

    def add(self, client: tuple[str, int] | None, method: str, path: str | bytes, status: int, started: float,
            principal: Principal | None, rid: str) -> None:
        """A request's line: the key id, never the key; `started` from perf_counter(), `path` without the query."""
        if not self.enabled:
            return
        self._lines.append((time.perf_counter(), started, client, method, path, status, principal, rid))
        if len(self._lines) == 1:
            try:
                asyncio.get_running_loop().call_later(self.FLUSH_AFTER, self.flush)
            except RuntimeError:  # no loop: write now
                self.flush()

    def flush(self) -> None:
        if self._lines and self.stream is not None:
            lines, self._lines = self._lines, []
            wall, now = time.time(), time.perf_counter()
            text = []
            for at, started, client, method, path, status, principal, rid in lines:
                if type(path) is bytes:
                    path = path.decode("latin-1")
                text.append(f'{utc_stamp(wall - (now - at))} INFO ngm.access {client[0] if client else "-"} '
                            # path is a str here (bytes decoded above): mypy narrows no else-branch of `type(x) is`
                            f'"{method} {path}" {status} {(at - started) * 1000:.1f}ms '  # type: ignore[str-bytes-safe]
                            f'key={principal.key_id if principal else "-"} rid={rid}\n')
            try:
                self.stream.write("".join(text))
                self.stream.flush()
            except (OSError, ValueError):  # a closed stream must not break serving
                pass


access_log = AccessLog()
