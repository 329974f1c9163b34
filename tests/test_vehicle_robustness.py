"""The vehicle keeps working when the link misbehaves or a stray command arrives."""

from __future__ import annotations

from pathlib import Path

from proto.bus import BusError
from tests.test_vehicle_agent import STEPS, Rig


def test_unacknowledged_update_does_not_leave_the_vehicle_busy(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    real_publish = rig.bus.publish

    def flaky(topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        if "/update/" in topic:
            raise BusError("no PUBACK within 10 s")
        real_publish(topic, payload, qos, retain)

    rig.bus.publish = flaky  # type: ignore[method-assign]
    rig.announce(0)
    rig.agent.pump()
    assert rig.agent.counters["update_publish_failed"] == 1 and rig.agent.job.state == "done"
    rig.bus.publish = real_publish  # type: ignore[method-assign]
    rig.announce(1)
    rig.agent.pump()
    assert [u.round for u in rig.updates] == [1]  # the next round is taken as usual


def test_command_for_another_round_does_not_interrupt_training(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.learner.during_step = lambda: rig.command("early_upload", round_=7)  # stale, redelivered after a reconnect
    rig.announce(0)
    rig.agent.pump()
    assert len(rig.updates) == 1 and rig.updates[0].report.steps == STEPS and not rig.updates[0].report.partial


def test_status_names_the_configured_rsu_and_is_sent_when_field_training_starts(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.agent.s = rig.agent.s.model_copy(update={"rsu": "rsu1"})
    seen_busy = []
    rig.learner.during_step = lambda: seen_busy.append(rig.status[-1].busy)
    rig.announce(0)
    rig.agent.pump()
    assert seen_busy == [True]  # the RSU hears "busy" before training ends
    assert rig.status[-1].rsu == "rsu1"


def test_cleared_retained_round_is_ignored_quietly(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.rsu.publish("fedrank/v1/rsu/rsu1/round/t1", b"", qos=1, retain=True)
    rig.agent.pump()
    assert rig.updates == [] and not any(k.startswith("rejected") for k in rig.agent.counters)
