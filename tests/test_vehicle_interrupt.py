"""SIGTERM during training: the daemon calls `interrupt_work`, training stops at the next step, nothing half-done
is published, and stopping leaves an offline status."""

from __future__ import annotations

from pathlib import Path

from proto.codec import decode
from proto.topics import Role
from tests.test_vehicle_agent import STEPS, Rig, T


def test_interrupt_stops_training_at_the_next_step_and_publishes_no_partial_update(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.learner.during_step = rig.agent.interrupt_work  # the signal arrives while step 1 runs
    rig.announce(0)
    rig.agent.pump()
    assert rig.updates == []
    job = rig.agent.job
    assert job is not None and job.result.partial and job.result.steps == 1 < STEPS
    rig.agent.stop()
    retained = rig.broker.retained(T.status(Role.VEHICLE, "veh1"))
    assert retained is not None and decode(retained).msg.state == "offline"
