"""The Hypothesis profile conftest.py selects: derandomised under CI, random locally."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]


def test_the_loaded_profile_matches_the_environment() -> None:
    from tests.conftest import HYPOTHESIS_PROFILE

    assert settings.default.derandomize is (HYPOTHESIS_PROFILE == "ci")
    if os.environ.get("CI", "").lower() in ("1", "true", "yes") and not os.environ.get("HYPOTHESIS_PROFILE"):
        assert HYPOTHESIS_PROFILE == "ci"


DRAWN: list[int] = []


@settings(max_examples=5)
@given(st.integers(0, 10**9))
def test_record_inputs(x: int) -> None:
    DRAWN.append(x)


def test_ci_profile_draws_the_same_inputs_on_every_run() -> None:
    script = ("import sys; sys.path.insert(0, '.'); import tests.conftest, tests.test_hypothesis_profile as t;"
              " t.test_record_inputs(); print(t.DRAWN)")
    env = {**os.environ, "HYPOTHESIS_PROFILE": "ci", "PYTHONPATH": str(REPO)}
    runs = [subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=120) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    assert runs[0].stdout == runs[1].stdout and runs[0].stdout.startswith("[")
