"""setup_logging: one line per event, JSON off a terminal, role/agent and context ids as fields."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from fedrank.logs import parse_level, setup_logging


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


def test_json_line_carries_role_agent_and_extra_ids() -> None:
    out = io.StringIO()
    setup_logging("rsu", "rsu-7", "INFO", json_lines=True, stream=out)
    logging.getLogger("rsu_agent.rounds").info(
        "update from %s accepted", "veh-2", extra={"task": "sst2", "round": 4, "vehicle": "veh-2"}
    )
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["role"] == "rsu" and rec["agent"] == "rsu-7"
    assert rec["msg"] == "update from veh-2 accepted"
    assert (rec["task"], rec["round"], rec["vehicle"]) == ("sst2", 4, "veh-2")
    assert rec["level"] == "INFO" and rec["logger"] == "rsu_agent.rounds"
    assert rec["ts"].endswith("Z")


def test_json_is_the_default_when_stream_is_not_a_terminal() -> None:
    out = io.StringIO()
    setup_logging("edge", "veh-1", stream=out)
    logging.getLogger("x").warning("hello")
    assert json.loads(out.getvalue())["msg"] == "hello"


def test_text_is_the_default_on_a_terminal_and_shows_context() -> None:
    out = _Tty()
    setup_logging("edge", "veh-1", stream=out)
    logging.getLogger("edge_agent").info("trained", extra={"task": "ner", "round": 2})
    line = out.getvalue().strip()
    assert "\n" not in line
    assert "edge/veh-1 [task=ner round=2] edge_agent: trained" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_exception_stays_inside_one_json_line() -> None:
    out = io.StringIO()
    setup_logging("cloud", "cloud-1", json_lines=True, stream=out)
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        logging.getLogger("c").exception("handler failed")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert "RuntimeError: boom" in rec["exc"]


def test_level_filters_and_setup_twice_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    setup_logging("edge", "veh-1", "INFO", json_lines=True, stream=first)
    setup_logging("edge", "veh-1", "WARNING", json_lines=True, stream=second)
    logging.getLogger("a").info("quiet")
    logging.getLogger("a").warning("loud")
    assert first.getvalue() == ""
    assert [json.loads(x)["msg"] for x in second.getvalue().splitlines()] == ["loud"]


def test_non_json_values_in_extra_are_stringified_not_raised() -> None:
    out = io.StringIO()
    setup_logging("edge", "veh-1", json_lines=True, stream=out)
    logging.getLogger("a").info("x", extra={"task": object()})
    assert json.loads(out.getvalue())["task"].startswith("<object object")


def test_parse_level_accepts_names_and_numbers_and_names_a_bad_value() -> None:
    assert parse_level("debug") == logging.DEBUG
    assert parse_level(" Warning ") == logging.WARNING
    assert parse_level(15) == 15
    with pytest.raises(ValueError, match="'LOUD'"):
        parse_level("LOUD")
    with pytest.raises(ValueError):
        setup_logging("edge", "veh-1", "verbose", stream=io.StringIO())
