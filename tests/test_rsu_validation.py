"""Bad input at the RSU: each case is rejected with its reason and never touches the round, lambda or global."""

from __future__ import annotations

import pytest
import torch

from proto.adapter import LoraFactors, pack_lora
from proto.codec import encode
from proto.messages import RoundAnnouncement, UpdateReport, VehicleUpdate
from proto.topics import Channel
from tests.helpers_rsu import TOPICS, Rig, factors, head, make_update, rsu_settings


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path, rsu_settings(tmp_path))
    for v in ("v1", "v2"):
        r.vehicle(v, x=10.0)
    r.advance(1.0)
    assert r.messages(Channel.ROUND, RoundAnnouncement)[-1].msg.participants == ["v1", "v2"]
    return r


def _raw_update(vehicle: str, tensors: dict[str, torch.Tensor], **report_kw) -> bytes:
    """An update built with model_construct, so values pydantic would refuse can still reach the wire."""
    rep = {"rank": 4, "samples": 10, "joules": 1.0, "energy_source": "rapl", "energy_measured": True, "train_s": 1.0,
           "wall_s": 1.0, "local_accuracy": 0.5, "loss": 0.1}
    rep.update(report_kw)
    msg = VehicleUpdate(sender=vehicle, task="t1", round=0, rsu="rsu1", lora_alpha=16.0,
                        report=UpdateReport.model_construct(**rep))
    return encode(msg, tensors)


def _wrong_shape() -> dict[str, torch.Tensor]:
    f = factors(4, 0)
    f["q"] = LoraFactors(A=f["q"].A.T.contiguous(), B=f["q"].B.T.contiguous())  # transposed: (12, 4), (4, 16)
    return pack_lora(f, head(0))


def _extra_layer() -> dict[str, torch.Tensor]:
    f = factors(4, 0)
    f["k"] = LoraFactors(A=f["q"].A.clone(), B=f["q"].B.clone())
    return pack_lora(f, head(0))


def _bad_head() -> dict[str, torch.Tensor]:
    return pack_lora(factors(4, 0), {"weight": torch.zeros(3, 16), "bias": torch.zeros(3)})


def _nan() -> dict[str, torch.Tensor]:
    f = factors(4, 0)
    f["v"].A[0, 0] = float("nan")
    return pack_lora(f, head(0))


V1 = TOPICS.update("v1", "rsu1", "t1")
CASES = [
    # (reason, topic, payload)
    ("bad_safetensors", V1, b"\x00\x01 not a safetensors blob"),
    ("not_finite", V1, _raw_update("v1", _nan())),
    ("rank_not_candidate", V1, make_update("v1", 0, rank=3).payload),
    ("work_not_candidate", V1, make_update("v1", 0, work=0.5).payload),  # a configuration the round did not offer
    ("bad_layers", V1, _raw_update("v1", _extra_layer())),
    ("bad_shape", V1, _raw_update("v1", _wrong_shape())),
    ("bad_head", V1, _raw_update("v1", _bad_head())),
    # pydantic refuses these while decoding: the codec's reason
    ("invalid_field", V1, _raw_update("v1", pack_lora(factors(4, 0), head(0)), joules=-5.0)),
    ("invalid_field", V1, _raw_update("v1", pack_lora(factors(4, 0), head(0)), local_accuracy=float("inf"))),
    ("alpha_mismatch", V1, make_update("v1", 0, alpha=8.0).payload),
    ("wrong_round", V1, make_update("v1", 3).payload),
    ("not_participant", TOPICS.update("v9", "rsu1", "t1"), make_update("v9", 0).payload),
    ("unknown_task", TOPICS.update("v1", "rsu1", "t9"), make_update("v1", 0, task="t9").payload),
    ("topic_mismatch", V1, make_update("v2", 0).payload),
    ("bad_migration", V1, make_update("v1", 0, migrated_from="v2").payload),
]


@pytest.mark.parametrize(("reason", "topic", "payload"), CASES, ids=[f"{i}-{c[0]}" for i, c in enumerate(CASES)])
def test_bad_update_is_rejected_with_its_reason_and_changes_nothing(rig, reason, topic, payload):
    if reason == "bad_head":  # the first accepted head fixes the names and shapes
        rig.upload(make_update("v2", 0, seed=2))
    tr = rig.agent.tasks["t1"]
    before = (set(tr.accepted), tr.meta.lam, tr.meta.violation_j, dict(tr.layers))
    rig.send(topic, payload)
    assert rig.agent.counters["rejected"] == {reason: 1}
    assert (set(tr.accepted), tr.meta.lam, tr.meta.violation_j, dict(tr.layers)) == before
    assert tr.pending is not None and rig.agent.history == ()  # the round still waits for v1
    # the real update still counts afterwards, and only it does
    u1 = make_update("v1", 0, seed=1)
    rig.upload(u1)
    if reason != "bad_head":
        rig.upload(make_update("v2", 0, seed=2))
    assert rig.agent.history[-1].accepted == ["v1", "v2"]
    assert rig.agent.counters["accepted"] == 2


def test_rejections_are_logged_with_topic_and_reason(rig, caplog):
    rig.send(V1, make_update("v1", 0, rank=3).payload)
    assert any("rank_not_candidate" in r.getMessage() and V1 in r.getMessage() for r in caplog.records)


def test_a_status_whose_payload_names_another_sender_is_refused(rig):
    from tests.helpers_rsu import status

    topic, _ = status("v3")
    _, payload = status("v1", x=500.0, state="offline")
    rig.send(topic, payload)
    assert rig.agent.counters["rejected"] == {"sender_mismatch": 1}
    assert rig.agent.vehicles["v1"].status.state == "online"


def test_validate_refuses_a_constructed_report_that_bypassed_pydantic():
    from rsu_agent.validate import UpdateRejected, validate_update
    from tests.helpers_rsu import task_cfg

    rep = UpdateReport.model_construct(rank=4, samples=10, joules=float("nan"), energy_source="x", energy_measured=True,
                                       train_s=1.0, wall_s=1.0, local_accuracy=0.5, loss=0.1)
    msg = VehicleUpdate.model_construct(sender="v1", task="t1", round=0, rsu="rsu1", lora_alpha=16.0, report=rep)
    with pytest.raises(UpdateRejected) as err:
        validate_update(msg, pack_lora(factors(4, 0), head(0)), task_cfg(), None)
    assert err.value.reason == "bad_report"


@pytest.mark.parametrize(
    ("topic", "reason"),
    [("fedrank/v1/vehicle/v1/update/rsu1/t1/extra", "unknown_topic"), ("other/root/x", "foreign_topic"),
     (TOPICS.update("v1", "rsu2", "t1"), "unexpected_topic")],
)
def test_a_delivery_on_a_topic_outside_the_contract_is_refused(rig, topic, reason):
    from proto.bus import Delivery

    rig.agent.on_delivery(Delivery(topic, make_update("v1", 0).payload))  # as a misbehaving transport would
    assert rig.agent.counters["rejected"] == {reason: 1}
    assert rig.agent.tasks["t1"].accepted == {}
