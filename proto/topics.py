"""The topic tree. Topics are built and parsed here only; see proto/README.md for the table.

Every topic a vehicle publishes on has its vehicle id as a level so that broker ACLs
(`%c` patterns) can pin a device to its own topics.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from proto.errors import TopicRejected

DEFAULT_ROOT = "fedrank/v1"
# Ids become topic levels: no wildcards, separators or control characters.
_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class Role(str, Enum):
    VEHICLE = "vehicle"
    RSU = "rsu"
    CLOUD = "cloud"


class Channel(str, Enum):
    """What a topic carries; each maps to exactly one message kind."""

    STATUS = "status"  # {root}/status/{role}/{id}                       retained, will
    BUDGET = "budget"  # {root}/cloud/{cloud}/budget/{task}               retained
    ROUND = "round"  # {root}/rsu/{rsu}/round/{task}                     retained
    TIER = "tier"  # {root}/rsu/{rsu}/tier/{task}/{index}                retained
    STATS = "stats"  # {root}/rsu/{rsu}/stats/{task}
    COMMAND = "command"  # {root}/rsu/{rsu}/command/{vehicle}
    HANDOFF = "handoff"  # {root}/rsu/{rsu}/handoff/{vehicle}
    UPDATE = "update"  # {root}/vehicle/{vehicle}/update/{rsu}/{task}


@dataclass(frozen=True)
class TopicInfo:
    """A parsed topic."""

    channel: Channel
    sender: str
    role: Role
    task: str | None = None
    target: str | None = None  # the vehicle a command/handoff is for, the RSU an update is for, or a tier index


def check_id(value: str, what: str = "id") -> str:
    """Return `value` if it is usable as a topic level, else raise TopicRejected."""
    # fullmatch, not match: `$` would let a trailing newline through.
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise TopicRejected("bad_id", f"{what} {value!r} must match {_ID_RE.pattern}")
    return value


class Topics:
    """Builds and parses topics under one root (default `fedrank/v1`)."""

    def __init__(self, root: str = DEFAULT_ROOT) -> None:
        root = root.strip("/")
        if not root or any(c in root for c in "+#\0"):
            raise TopicRejected("bad_root", repr(root))
        self.root = root
        self._depth = len(root.split("/"))

    # -- builders ---------------------------------------------------------------------------
    def status(self, role: Role, agent_id: str) -> str:
        return f"{self.root}/status/{Role(role).value}/{check_id(agent_id)}"

    def budget(self, cloud_id: str, task: str) -> str:
        return f"{self.root}/cloud/{check_id(cloud_id)}/budget/{check_id(task, 'task')}"

    def round(self, rsu_id: str, task: str) -> str:
        return f"{self.root}/rsu/{check_id(rsu_id)}/round/{check_id(task, 'task')}"

    def tier(self, rsu_id: str, task: str, index: int) -> str:
        """One nested rank tier of a round's global adapter."""
        if not isinstance(index, int) or index < 0:
            raise TopicRejected("bad_id", f"tier index {index!r} must be an integer >= 0")
        return f"{self.root}/rsu/{check_id(rsu_id)}/tier/{check_id(task, 'task')}/{index}"

    def stats(self, rsu_id: str, task: str) -> str:
        return f"{self.root}/rsu/{check_id(rsu_id)}/stats/{check_id(task, 'task')}"

    def command(self, rsu_id: str, vehicle_id: str) -> str:
        return f"{self.root}/rsu/{check_id(rsu_id)}/command/{check_id(vehicle_id)}"

    def handoff(self, rsu_id: str, vehicle_id: str) -> str:
        return f"{self.root}/rsu/{check_id(rsu_id)}/handoff/{check_id(vehicle_id)}"

    def update(self, vehicle_id: str, rsu_id: str, task: str) -> str:
        return f"{self.root}/vehicle/{check_id(vehicle_id)}/update/{check_id(rsu_id)}/{check_id(task, 'task')}"

    # -- subscription filters ---------------------------------------------------------------
    def all_status(self, role: Role | None = None) -> str:
        return f"{self.root}/status/{Role(role).value}/+" if role else f"{self.root}/status/+/+"

    def all_budgets(self) -> str:
        return f"{self.root}/cloud/+/budget/+"

    def rounds_for_task(self, task: str) -> str:
        return f"{self.root}/rsu/+/round/{check_id(task, 'task')}"

    def all_stats(self) -> str:
        return f"{self.root}/rsu/+/stats/+"

    def commands_for(self, vehicle_id: str) -> str:
        return f"{self.root}/rsu/+/command/{check_id(vehicle_id)}"

    def handoffs_for(self, vehicle_id: str) -> str:
        return f"{self.root}/rsu/+/handoff/{check_id(vehicle_id)}"

    def updates_for(self, rsu_id: str) -> str:
        return f"{self.root}/vehicle/+/update/{check_id(rsu_id)}/+"

    # -- parser -----------------------------------------------------------------------------
    def parse(self, topic: str) -> TopicInfo:
        """Parse a concrete topic into its parts, or raise TopicRejected."""
        if not isinstance(topic, str):
            raise TopicRejected("bad_topic", f"topic is {type(topic).__name__}, not str")
        parts = topic.split("/")
        if parts[: self._depth] != self.root.split("/"):
            raise TopicRejected("foreign_topic", topic)
        rest = parts[self._depth :]
        try:
            for level in rest:
                check_id(level, "topic level")
            match rest:
                case ["status", role, agent]:
                    return TopicInfo(Channel.STATUS, agent, Role(role))
                case ["cloud", cloud, "budget", task]:
                    return TopicInfo(Channel.BUDGET, cloud, Role.CLOUD, task=task)
                case ["rsu", rsu, "round", task]:
                    return TopicInfo(Channel.ROUND, rsu, Role.RSU, task=task)
                case ["rsu", rsu, "tier", task, index] if index.isdigit():
                    return TopicInfo(Channel.TIER, rsu, Role.RSU, task=task, target=index)
                case ["rsu", rsu, "stats", task]:
                    return TopicInfo(Channel.STATS, rsu, Role.RSU, task=task)
                case ["rsu", rsu, "command", vehicle]:
                    return TopicInfo(Channel.COMMAND, rsu, Role.RSU, target=vehicle)
                case ["rsu", rsu, "handoff", vehicle]:
                    return TopicInfo(Channel.HANDOFF, rsu, Role.RSU, target=vehicle)
                case ["vehicle", vehicle, "update", rsu, task]:
                    return TopicInfo(Channel.UPDATE, vehicle, Role.VEHICLE, task=task, target=rsu)
        except ValueError as exc:  # unknown Role value
            raise TopicRejected("unknown_topic", topic) from exc
        except TopicRejected as exc:
            raise TopicRejected("unknown_topic", f"{topic} ({exc.detail})") from exc
        raise TopicRejected("unknown_topic", topic)


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT 3.1.1/5 filter matching: `+` one level, `#` the rest (including the parent),
    and a leading wildcard never matches a `$`-topic."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    f_parts = topic_filter.split("/")
    t_parts = topic.split("/")
    for i, f in enumerate(f_parts):
        if f == "#":
            return True  # matches this level and everything below, including nothing (`a/#` ~ `a`)
        if i >= len(t_parts):
            return False
        if f != "+" and f != t_parts[i]:
            return False
    return len(f_parts) == len(t_parts)


def valid_filter(topic_filter: str) -> bool:
    """True for a syntactically valid MQTT subscription filter."""
    if not topic_filter or "\0" in topic_filter:
        return False
    parts = topic_filter.split("/")
    for i, p in enumerate(parts):
        if "#" in p and (p != "#" or i != len(parts) - 1):
            return False
        if "+" in p and p != "+":
            return False
    return True
