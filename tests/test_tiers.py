"""The two test tiers (tests/conftest.py): what the README's command selects, and what it refuses to run."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
A_RAY_TEST = "tests/wm/test_ray_workers.py::test_actors_that_keep_failing_end_in_one_error"  # marked by its fixture
A_SLOW_TEST = "tests/wm/test_pipeline.py::test_killed_stage_resumes"  # marked by hand


def test_a_quick_tier_test_that_runs_a_binary_as_a_subprocess_fails_saying_so():
    with pytest.raises(pytest.fail.Exception, match="mark the test @pytest.mark.slow"):
        subprocess.run([sys.executable, "-m", "wm.evaluate", "--help"], capture_output=True)
    # a plain Python probe is allowed
    assert subprocess.run([sys.executable, "-c", "print(1)"], capture_output=True, text=True).stdout == "1\n"


def _collect(*args: str) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return {line for line in proc.stdout.splitlines() if "::" in line}


@pytest.mark.slow
def test_the_tiers_split_the_suite_and_named_tests_run_whatever_their_tier():
    quick, slow = _collect(), _collect("-m", "slow")
    assert quick and slow and not quick & slow
    assert A_RAY_TEST in slow and A_SLOW_TEST in slow
    assert quick | slow == _collect("-m", "")  # -m "" is the whole suite
    assert len(quick | slow) >= 428  # the suite's size when the tiers were made: no test dropped
    assert _collect(A_SLOW_TEST) == {A_SLOW_TEST}
