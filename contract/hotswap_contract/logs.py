"""Logging for the three processes: ``text`` for people, ``json`` (one object a line) for log stacks.

The format is a setting of each process (``--log-format``); fields passed with ``extra=`` (the
access log's ``request_id``, ``status``, ``version``, ...) become keys of the JSON object and are
appended as ``key=value`` in text.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
from datetime import UTC, datetime
from typing import Any

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
# A client's request id is echoed and logged: printable ASCII only, bounded, so it cannot forge
# log lines or headers. Anything else is replaced by a fresh id.
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_extra(record),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = _extra(record)
        return line + "".join(f" {k}={v}" for k, v in extra.items()) if extra else line


def configure(level: str, fmt: str = "text") -> None:
    """Root logging for a process: one stderr handler in ``fmt`` (``text`` or ``json``)."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def request_id(given: str | None) -> str:
    """The client's ``X-Request-Id`` when it is acceptable, else a new one."""
    if given is not None and _REQUEST_ID.fullmatch(given):
        return given
    return secrets.token_hex(8)


ACCESS_LOGGER = "hotswap.access"


def log_access(
    process: str, method: str, path: str, status: int, seconds: float, request_id: str, version: str | None
) -> None:
    """One access-log line: who asked for what, how it ended, and which model version scored it."""
    logging.getLogger(f"{ACCESS_LOGGER}.{process}").info(
        "%s %s %d %.1fms",
        method,
        path,
        status,
        seconds * 1000,
        extra={
            "request_id": request_id,
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "version": version,
        },
    )
