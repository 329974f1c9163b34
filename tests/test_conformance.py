"""issue 13: a vehicle update built from the published schemas and proto/README.md alone (tests/
conformance_builder.py: jsonschema + safetensors' numpy API, no fedrank import) is accepted by a real RSU daemon
over a real Mosquitto."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_rsu_daemon import write_config

REPO = Path(__file__).resolve().parents[1]
BUILDER = Path(__file__).with_name("conformance_builder.py")


def test_the_builder_imports_nothing_of_fedrank():
    tree = ast.parse(BUILDER.read_text())
    mods = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not mods & {"fedrank", "proto", "rsu_agent", "edge_agent", "cloud_agent", "fleet", "tests"}, mods


@pytest.mark.mosquitto
def test_a_schema_built_update_is_accepted_by_a_real_rsu_daemon(tmp_path, mosquitto):
    pytest.importorskip("jsonschema")
    from tests import conformance_builder

    cfg = write_config(tmp_path / "rsu.toml", tmp_path / "state", port=mosquitto.port)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    log = (tmp_path / "rsu.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "fedrank", "rsu", "--config", str(cfg)], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        out = conformance_builder.run(mosquitto.port, "vendor-veh", "rsu-d", "t1", timeout_s=90.0)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{(tmp_path / 'rsu.log').read_text()[-3000:]}") from exc
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    stats, ann = out["stats"], out["announcement"]
    assert ann["round"] == 0 and ann["rank"] == 0 and ann["dims"] == {"q": [16, 12]}
    assert (stats["updates"], stats["participants"], stats["ranks"]) == (1, 1, [ann["ranks"][0]])
    assert stats["energy_j"] == 12.5 and out["notices"] is None
