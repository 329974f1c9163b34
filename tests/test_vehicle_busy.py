"""A vehicle listed in a second round while it trains says, at once, which round it is busy with."""

from __future__ import annotations

from pathlib import Path

from tests.test_vehicle_agent import FakeCost, Rig


def test_round_while_busy_publishes_status_naming_the_round_in_progress(tmp_path: Path) -> None:
    rig = Rig(tmp_path, cost=FakeCost())  # modelled: the first round is still training when the second arrives
    rig.announce(0)
    rig.agent.pump()
    before = len(rig.status)
    rig.announce(1)
    rig.agent.pump()
    assert rig.agent.counters.get("round_while_busy") == 1
    latest = rig.status[-1]
    assert len(rig.status) == before + 1 and latest.busy
    assert latest.working_on is not None
    assert (latest.working_on.rsu, latest.working_on.task, latest.working_on.round) == ("rsu1", "t1", 0)
