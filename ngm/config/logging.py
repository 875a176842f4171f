"""Logging set up once per process, before nexus is imported (it calls basicConfig(INFO) at import).

Our loggers (`ngm.*`) and uvicorn's log at the configured level. Everything else is held back below
CRITICAL by a handler filter: the Kailash stack logs every expected outcome (a 404, a name conflict) as
an ERROR under loggers named after node classes, and the executor already logs every unexpected failure
itself with its traceback. NGM_LOG_LEVEL=DEBUG lets everything through for debugging.
"""

from __future__ import annotations

import logging
import sys

from ngm.dataplane.access_log import access_log, utc_stamp

_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
_OURS = ("ngm", "uvicorn")


class _UTCFormatter(logging.Formatter):
    def formatTime(self, record, datefmt=None):  # noqa: N802 (logging API)
        return utc_stamp(record.created)


class _OwnRecordsFilter(logging.Filter):
    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".", 1)[0] in _OURS:
            return record.levelno >= self.level
        return record.levelno >= (logging.DEBUG if self.level <= logging.DEBUG else logging.CRITICAL)




def setup_logging(level: str = "INFO", stream=None) -> None:
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        numeric = logging.INFO
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_UTCFormatter(_FORMAT))
    handler.addFilter(_OwnRecordsFilter(numeric))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if numeric <= logging.DEBUG else logging.INFO)
    logging.getLogger("ngm").setLevel(numeric)
    logging.getLogger("uvicorn.access").disabled = True  # replaced by ngm.access: one line per request
    access_log.configure(stream or sys.stderr, numeric <= logging.INFO)
