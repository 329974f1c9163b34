"""Message models: tags and versions, the unknown-field policy, identity fields, validation of values."""

from __future__ import annotations

import json
import math

import pytest
from pydantic import ValidationError

from proto import SCHEMA_VERSION
from proto.codec import decode, encode
from proto.errors import PayloadRejected
from proto.messages import (
    ALL_MESSAGES,
    BY_KIND,
    AgentStatus,
    FaultCommand,
    Handoff,
    Message,
    Position,
    Rejected,
    RoundAnnouncement,
    RoundTier,
    TaskBudget,
    TaskStats,
    UpdateReport,
    VehicleUpdate,
    Velocity,
)

REPORT = UpdateReport(
    rank=4,
    samples=120,
    joules=35.5,
    energy_source="rapl",
    energy_measured=True,
    train_s=12.0,
    upload_s=0.25,
    wall_s=12.5,
    local_accuracy=0.81,
    loss=0.43,
    steps=8,
)

SAMPLES: dict[str, Message] = {
    "status": AgentStatus(
        sender="veh-1",
        seq=3,
        role="vehicle",
        state="online",
        tasks=["sst2", "ner"],
        position=Position(x=10.0, y=-2.5),
        velocity=Velocity(vx=13.9, vy=0.0),
        rsu="rsu_1",
        busy=True,
    ),
    "budget": TaskBudget(
        sender="c0", task="sst2", round=2, window_rounds=5, window_budget_j=500.0, round_budget_j=100.0
    ),
    "round": RoundAnnouncement(
        sender="rsu_1",
        seq=7,
        task="sst2",
        task_type="sentence",
        round=3,
        deadline=1234.5,
        lam=0.75,
        round_budget_j=100.0,
        ranks=[2, 4, 8, 16, 32],
        rank=32,
        layers=["encoder.layer.0.attention.self.query"],
        participants=["veh-1", "veh-2"],
    ),
    "round_tier": RoundTier(sender="rsu_1", seq=8, task="sst2", round=3, index=1, first=3, last=4),
    "update": VehicleUpdate(sender="veh-1", seq=9, task="sst2", round=3, rsu="rsu_1", lora_alpha=16.0, report=REPORT),
    "task_stats": TaskStats(
        sender="rsu_1",
        task="sst2",
        round=3,
        energy_j=110.0,
        budget_j=100.0,
        lam=0.8,
        violation_j=10.0,
        accuracy=0.8,
        loss=0.5,
        ranks=[4, 8],
        participants=2,
        updates=2,
    ),
    "command": FaultCommand(
        sender="rsu_1",
        task="sst2",
        round=3,
        vehicle="veh-2",
        action="migrate",
        migrate_to="veh-3",
        costs={"early_upload": 0.3, "migrate": 0.1, "abandon": 0.9},
        exit_in_s=4.0,
    ),
    "handoff": Handoff(
        sender="rsu_1",
        task="sst2",
        round=3,
        rsu="rsu_1",
        vehicle="veh-3",
        migrated_from="veh-2",
        lora_alpha=16.0,
        rank=4,
        joules_spent=12.0,
    ),
    "rejected": Rejected(sender="rsu_1", vehicle="veh-3", reason="alpha_mismatch", task="sst2", detail="16 != 8"),
}


def test_every_kind_has_a_sample_and_a_unique_tag() -> None:
    assert set(SAMPLES) == set(BY_KIND) == {m.KIND for m in ALL_MESSAGES}
    assert len(BY_KIND) == len(ALL_MESSAGES)


@pytest.mark.parametrize("cls", ALL_MESSAGES, ids=lambda c: c.KIND)
def test_each_model_carries_its_kind_and_the_schema_version(cls: type[Message]) -> None:
    msg = SAMPLES[cls.KIND]
    dumped = json.loads(msg.model_dump_json())
    assert dumped["kind"] == cls.KIND
    assert dumped["v"] == SCHEMA_VERSION == 2


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_every_kind_round_trips_through_the_codec_unchanged(kind: str) -> None:
    msg = SAMPLES[kind]
    out = decode(encode(msg), type(msg))
    # Tensor messages come back with their (here empty) tensor declaration filled in by the codec.
    assert out.msg == msg
    assert out.tensors == {}


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_state_changing_messages_carry_sender_task_round_and_seq(kind: str) -> None:
    fields = type(SAMPLES[kind]).model_fields
    assert {"sender", "seq"} <= set(fields)
    if kind != "status":  # status is a retained presence flag: last one wins, no round
        assert {"task", "round"} <= set(fields)


def test_unknown_fields_are_ignored_not_rejected() -> None:
    obj = json.loads(SAMPLES["budget"].model_dump_json())
    obj["added_in_a_later_minor"] = {"anything": [1, 2]}
    obj["report"] = "ignored too"
    out = decode(json.dumps(obj).encode(), TaskBudget)
    assert out.msg == SAMPLES["budget"]
    assert not hasattr(out.msg, "added_in_a_later_minor")


def test_messages_are_frozen() -> None:
    with pytest.raises(ValidationError):
        SAMPLES["budget"].round = 9  # type: ignore[misc]


@pytest.mark.parametrize("v", [0, 1, 3, "2", 2.0, True, None])
def test_any_other_schema_version_is_rejected(v: object) -> None:
    obj = json.loads(SAMPLES["status"].model_dump_json())
    obj["v"] = v
    with pytest.raises(PayloadRejected) as e:
        decode(json.dumps(obj).encode(), AgentStatus)
    assert e.value.reason == "bad_version"


def test_a_missing_version_is_rejected_even_though_the_model_has_a_default() -> None:
    obj = json.loads(SAMPLES["status"].model_dump_json())
    del obj["v"]
    with pytest.raises(PayloadRejected) as e:
        decode(json.dumps(obj).encode())
    assert e.value.reason == "bad_version"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sender", "veh/1"),
        ("sender", "+"),
        ("sender", "#"),
        ("sender", ""),
        ("sender", "x" * 65),
        ("round", -1),
        ("window_rounds", 0),
        ("window_budget_j", -0.5),
        ("round_budget_j", math.inf),
        ("seq", -3),
        ("sent_at", math.nan),
    ],
)
def test_out_of_range_values_fail_validation(field: str, value: object) -> None:
    data = SAMPLES["budget"].model_dump()
    data[field] = value
    with pytest.raises(ValidationError):
        TaskBudget.model_validate(data)


@pytest.mark.parametrize("ranks", [[], [4, 2], [2, 2, 4], [0, 2]])
def test_candidate_ranks_must_be_positive_and_strictly_increasing(ranks: list[int]) -> None:
    data = SAMPLES["round"].model_dump()
    data["ranks"] = ranks
    with pytest.raises(ValidationError):
        RoundAnnouncement.model_validate(data)


@pytest.mark.parametrize(
    ("field", "value"),
    [("local_accuracy", 1.01), ("local_accuracy", -0.1), ("joules", -1.0), ("rank", 0), ("samples", 0)],
)
def test_update_reports_refuse_impossible_measurements(field: str, value: float) -> None:
    data = REPORT.model_dump()
    data[field] = value
    with pytest.raises(ValidationError):
        UpdateReport.model_validate(data)


def test_command_costs_must_be_finite() -> None:
    data = SAMPLES["command"].model_dump()
    data["costs"] = {"migrate": math.inf}
    with pytest.raises(ValidationError):
        FaultCommand.model_validate(data)


@pytest.mark.parametrize(("field", "value"), [("action", "explode"), ("role", "drone"), ("state", "maybe")])
def test_closed_vocabularies_reject_other_words(field: str, value: str) -> None:
    cls = FaultCommand if field == "action" else AgentStatus
    data = SAMPLES[cls.KIND].model_dump()
    data[field] = value
    with pytest.raises(ValidationError):
        cls.model_validate(data)


def test_tensor_kinds_are_exactly_round_tier_update_and_handoff() -> None:
    assert {m.KIND for m in ALL_MESSAGES if m.HAS_TENSORS} == {"round", "round_tier", "update", "handoff"}
