"""Logging for the daemons: one line per event, JSON when stderr is not a terminal (journald, files).

Every line carries the role and agent id; ids passed as `extra={"task": ..., "round": ..., "vehicle": ...}`
become fields of their own, so `journalctl -o cat -u fedrank-rsu | jq 'select(.task == "sst2")'` works.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

# Context fields lifted from `extra=` into their own keys (JSON) or a `[k=v ...]` prefix (text).
CONTEXT_KEYS: tuple[str, ...] = ("task", "round", "vehicle", "rsu", "topic", "reason")
_MARK = "_fedrank_handler"


def _timestamp(record: logging.LogRecord) -> str:
    """UTC ISO 8601 with milliseconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class _Identity(logging.Filter):
    """Stamps role and agent id on every record that passes the handler."""

    def __init__(self, role: str, agent_id: str) -> None:
        super().__init__()
        self.role, self.agent_id = role, agent_id

    def filter(self, record: logging.LogRecord) -> bool:
        record.role = self.role
        record.agent = self.agent_id
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, role, agent, msg, context fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "role": getattr(record, "role", None),
            "agent": getattr(record, "agent", None),
            "msg": record.getMessage(),
        }
        for key in CONTEXT_KEYS:
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        # default=str: an id that is a Path or an enum still logs instead of raising inside logging.
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """`ts LEVEL role/agent [task=.. round=..] logger: msg` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        ctx = " ".join(f"{k}={getattr(record, k)}" for k in CONTEXT_KEYS if hasattr(record, k))
        line = (
            f"{_timestamp(record)} {record.levelname:<7} {getattr(record, 'role', '-')}/{getattr(record, 'agent', '-')}"
            f"{' [' + ctx + ']' if ctx else ''} {record.name}: {record.getMessage()}"
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def parse_level(level: str | int) -> int:
    """`"info"`, `"DEBUG"`, `20` -> a logging level; ValueError naming the bad value otherwise."""
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    if isinstance(level, str):
        value = logging.getLevelName(level.strip().upper())
        if isinstance(value, int):
            return value
    raise ValueError(f"unknown log level {level!r}; use DEBUG, INFO, WARNING, ERROR or CRITICAL")


def setup_logging(
    role: str,
    agent_id: str,
    level: str | int = "INFO",
    json_lines: bool | None = None,
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Route the root logger to one handler on `stream` (default stderr); calling it again replaces it.

    Args:
        role: edge, rsu or cloud; on every line.
        agent_id: this agent's id; on every line.
        level: a level name or number (ValueError when unknown).
        json_lines: True forces JSON, False forces text, None picks JSON unless `stream` is a terminal.
        stream: where lines go (tests pass a StringIO).

    Returns:
        The installed handler.
    """
    lvl = parse_level(level)
    stream = sys.stderr if stream is None else stream
    if json_lines is None:
        isatty = getattr(stream, "isatty", None)
        json_lines = not (callable(isatty) and isatty())
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    handler.addFilter(_Identity(role, agent_id))
    setattr(handler, _MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(lvl)
    # paho logs every packet at DEBUG; keep it one notch quieter unless asked for explicitly.
    logging.getLogger("paho").setLevel(max(lvl, logging.INFO))
    return handler
