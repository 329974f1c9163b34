"""MQTT filter matching and filter syntax; the same table runs over both buses in test_bus_contract.py."""

from __future__ import annotations

import pytest

from proto.topics import topic_matches, valid_filter

# (filter, topic, matches) — each row is read straight off the MQTT 5 spec, section 4.7.
MATCH_CASES: list[tuple[str, str, bool]] = [
    ("a/b", "a/b", True),
    ("a/b", "a/c", False),
    ("a/b", "a/b/c", False),  # a filter without wildcards matches one topic only
    ("a/b/c", "a/b", False),
    ("A/b", "a/b", False),  # levels are case sensitive
    ("a/+", "a/b", True),
    ("a/+", "a/b/c", False),  # `+` is exactly one level
    ("a/+", "a", False),
    ("a/+", "a/", True),  # an empty level is still a level
    ("+", "a", True),
    ("+", "a/b", False),
    ("+/b", "a/b", True),
    ("+/+", "/x", True),  # leading empty level
    ("a/+/c", "a/b/c", True),
    ("a/+/c", "a/b/d", False),
    ("a/+/b", "a//b", True),
    ("a/#", "a", True),  # `#` also matches the parent level
    ("a/#", "a/b/c", True),
    ("a/#", "ab", False),  # near miss: prefix of a level is not a level
    ("a/#", "b/a", False),
    ("#", "a/b", True),
    ("+/#", "a", True),
    ("fedrank/v1/rsu/+/round/sst2", "fedrank/v1/rsu/r1/round/sst2", True),
    ("fedrank/v1/rsu/+/round/sst2", "fedrank/v1/rsu/r1/round/sst2x", False),  # near miss on the last level
    ("fedrank/v1/rsu/+/round/sst2", "fedrank/v1/rsu/r1/r2/round/sst2", False),
    ("#", "$SYS/broker/uptime", False),  # a leading wildcard never matches a `$` topic
    ("+/broker/uptime", "$SYS/broker/uptime", False),
    ("$SYS/#", "$SYS/broker/uptime", True),
    ("$SYS/+/uptime", "$SYS/broker/uptime", True),
    ("#", "$app/x", False),  # the same rule for any `$` topic (these rows also run over Mosquitto)
    ("+/x", "$app/x", False),
    ("$app/#", "$app/x", True),
    ("a/#", "a/$x", True),  # `$` only matters in the first level
]


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), MATCH_CASES)
def test_filter_matches_topic_as_the_mqtt_spec_says(topic_filter: str, topic: str, expected: bool) -> None:
    assert topic_matches(topic_filter, topic) is expected


@pytest.mark.parametrize("topic_filter", ["a/b", "+", "#", "a/#", "+/+/#", "$SYS/#", "a//b", "/"])
def test_valid_filters_are_accepted(topic_filter: str) -> None:
    assert valid_filter(topic_filter)


@pytest.mark.parametrize("topic_filter", ["", "a/#/b", "#/a", "a#", "a/b#", "a+/b", "a/+b", "++", "a\0b"])
def test_malformed_filters_are_rejected(topic_filter: str) -> None:
    assert not valid_filter(topic_filter)
