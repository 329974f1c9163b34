"""The topic tree: build/parse round trips for every channel, the vehicle id as a level, rejections."""

from __future__ import annotations

import pytest

from proto.errors import TopicRejected
from proto.topics import DEFAULT_ROOT, Channel, Role, TopicInfo, Topics, check_id, topic_matches

T = Topics()

# (built topic, the exact string expected, what parse must return); one row per channel.
CASES = [
    (
        T.status(Role.VEHICLE, "veh-1"),
        "fedrank/v1/status/vehicle/veh-1",
        TopicInfo(Channel.STATUS, "veh-1", Role.VEHICLE),
    ),
    (T.status(Role.RSU, "rsu.a"), "fedrank/v1/status/rsu/rsu.a", TopicInfo(Channel.STATUS, "rsu.a", Role.RSU)),
    (T.status(Role.CLOUD, "c0"), "fedrank/v1/status/cloud/c0", TopicInfo(Channel.STATUS, "c0", Role.CLOUD)),
    (
        T.budget("c0", "sst2"),
        "fedrank/v1/cloud/c0/budget/sst2",
        TopicInfo(Channel.BUDGET, "c0", Role.CLOUD, task="sst2"),
    ),
    (T.round("r1", "ner"), "fedrank/v1/rsu/r1/round/ner", TopicInfo(Channel.ROUND, "r1", Role.RSU, task="ner")),
    (T.tier("r1", "ner", 3), "fedrank/v1/rsu/r1/tier/ner/3",
     TopicInfo(Channel.TIER, "r1", Role.RSU, task="ner", target="3")),
    (T.stats("r1", "ner"), "fedrank/v1/rsu/r1/stats/ner", TopicInfo(Channel.STATS, "r1", Role.RSU, task="ner")),
    (
        T.command("r1", "veh-1"),
        "fedrank/v1/rsu/r1/command/veh-1",
        TopicInfo(Channel.COMMAND, "r1", Role.RSU, target="veh-1"),
    ),
    (
        T.handoff("r1", "veh-2"),
        "fedrank/v1/rsu/r1/handoff/veh-2",
        TopicInfo(Channel.HANDOFF, "r1", Role.RSU, target="veh-2"),
    ),
    (
        T.update("veh-1", "rsu_1", "copa"),
        "fedrank/v1/vehicle/veh-1/update/rsu_1/copa",
        TopicInfo(Channel.UPDATE, "veh-1", Role.VEHICLE, task="copa", target="rsu_1"),
    ),
]


@pytest.mark.parametrize(("topic", "literal", "info"), CASES, ids=[c[1] for c in CASES])
def test_every_channel_builds_the_documented_string_and_parses_back(topic: str, literal: str, info: TopicInfo) -> None:
    assert topic == literal
    assert T.parse(topic) == info


def test_every_channel_has_a_round_trip_case() -> None:
    assert {info.channel for _, _, info in CASES} == set(Channel)


def test_custom_root_round_trips_and_strips_outer_slashes() -> None:
    t = Topics("/site-a/fedrank/v1/")
    assert t.root == "site-a/fedrank/v1"
    topic = t.update("veh-1", "rsu_1", "sst2")
    assert topic == "site-a/fedrank/v1/vehicle/veh-1/update/rsu_1/sst2"
    assert t.parse(topic) == TopicInfo(Channel.UPDATE, "veh-1", Role.VEHICLE, task="sst2", target="rsu_1")


def test_a_topic_under_another_root_is_foreign() -> None:
    with pytest.raises(TopicRejected) as e:
        Topics("site-a/fedrank/v1").parse(T.round("rsu_1", "ner"))
    assert e.value.reason == "foreign_topic"
    with pytest.raises(TopicRejected) as e:
        T.parse("fedrank/v2/rsu/rsu_1/round/ner")  # another schema generation
    assert e.value.reason == "foreign_topic"


def test_vehicle_published_topics_carry_the_vehicle_id_as_a_whole_level() -> None:
    # The broker ACLs pin a device with `%c` as one level; a substring match would not be enough.
    assert "veh-9" in T.update("veh-9", "rsu_1", "sst2").split("/")
    assert "veh-9" in T.status(Role.VEHICLE, "veh-9").split("/")
    # ...and what an RSU sends to one vehicle is addressed by that vehicle's id as a level too.
    assert T.command("rsu_1", "veh-9").split("/")[-1] == "veh-9"
    assert T.handoff("rsu_1", "veh-9").split("/")[-1] == "veh-9"


@pytest.mark.parametrize(
    ("topic_filter", "topic", "matches"),
    [
        (T.all_status(), T.status(Role.VEHICLE, "veh-1"), True),
        (T.all_status(Role.RSU), T.status(Role.RSU, "r1"), True),
        (T.all_status(Role.RSU), T.status(Role.VEHICLE, "veh-1"), False),
        (T.all_budgets(), T.budget("c0", "sst2"), True),
        (T.rounds_for_task("sst2"), T.round("r1", "sst2"), True),
        (T.rounds_for_task("sst2"), T.round("r1", "ner"), False),
        (T.all_stats(), T.stats("r1", "ner"), True),
        (T.commands_for("veh-1"), T.command("r1", "veh-1"), True),
        (T.commands_for("veh-1"), T.command("r1", "veh-2"), False),
        (T.handoffs_for("veh-1"), T.handoff("r2", "veh-1"), True),
        (T.handoffs_for("veh-1"), T.command("r2", "veh-1"), False),
        (T.updates_for("r1"), T.update("veh-1", "r1", "sst2"), True),
        (T.updates_for("r1"), T.update("veh-1", "r2", "sst2"), False),
    ],
)
def test_subscription_filters_select_exactly_their_channel(topic_filter: str, topic: str, matches: bool) -> None:
    assert topic_matches(topic_filter, topic) is matches


@pytest.mark.parametrize(
    "topic",
    [
        "fedrank/v1",  # the root alone
        "fedrank/v1/",  # empty level
        "fedrank/v1/status/vehicle",  # too short
        "fedrank/v1/status/vehicle/veh-1/extra",  # too long
        "fedrank/v1/status/robot/x1",  # unknown role
        "fedrank/v1/rsu/r1/weather/sst2",  # unknown channel
        "fedrank/v1/vehicle/veh-1/update/r1",  # update without a task
        "fedrank/v1/rsu//round/sst2",  # empty id
        "fedrank/v1/rsu/+/round/sst2",  # a filter is not a topic
        "fedrank/v1/rsu/r1/round/#",
        "fedrank/v1/vehicle/veh 1/update/r1/sst2",  # space
        "fedrank/v1/vehicle/veh\n/update/r1/sst2",  # newline inside a level
        "fedrank/v1/status/vehicle/veh-1\n",  # trailing newline (a `$`-anchored regex lets this through)
        "fedrank/v1/status/vehicle/" + "x" * 65,  # id too long
        "$SYS/broker/uptime",
        "",
    ],
)
def test_topics_that_do_not_parse_are_rejected_with_a_reason(topic: str) -> None:
    with pytest.raises(TopicRejected) as e:
        T.parse(topic)
    assert e.value.reason in {"foreign_topic", "unknown_topic"}


def test_parse_refuses_non_strings_with_a_typed_error() -> None:
    with pytest.raises(TopicRejected) as e:
        T.parse(b"fedrank/v1/status/vehicle/veh-1")  # type: ignore[arg-type]
    assert e.value.reason == "bad_topic"


@pytest.mark.parametrize("bad", ["a+b", "+", "#", "a/b", "", "x" * 65, "veh-1\n", "nul\0", "ü", "a b"])
def test_ids_that_would_break_the_tree_are_refused_by_every_builder(bad: str) -> None:
    builders = [
        lambda: T.status(Role.VEHICLE, bad),
        lambda: T.budget(bad, "t"),
        lambda: T.budget("c0", bad),
        lambda: T.round(bad, "t"),
        lambda: T.stats("r1", bad),
        lambda: T.command("r1", bad),
        lambda: T.handoff(bad, "v1"),
        lambda: T.update(bad, "r1", "t"),
        lambda: T.update("v1", bad, "t"),
        lambda: T.update("v1", "r1", bad),
        lambda: T.commands_for(bad),
        lambda: T.updates_for(bad),
        lambda: T.rounds_for_task(bad),
    ]
    for build in builders:
        with pytest.raises(TopicRejected) as e:
            build()
        assert e.value.reason == "bad_id"


def test_check_id_accepts_the_documented_alphabet_up_to_64_characters() -> None:
    good = "Az09_.-" + "x" * 57
    assert len(good) == 64
    assert check_id(good) == good


@pytest.mark.parametrize("root", ["", "/", "fed+rank", "fedrank/#", "a\0b"])
def test_roots_with_wildcards_or_nothing_in_them_are_refused(root: str) -> None:
    with pytest.raises(TopicRejected) as e:
        Topics(root)
    assert e.value.reason == "bad_root"


def test_default_root_is_versioned() -> None:
    assert DEFAULT_ROOT == "fedrank/v1"
    assert Topics().root == DEFAULT_ROOT
