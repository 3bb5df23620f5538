"""The Home Assistant subprocess runner shared by the benchmark and the soak.

A failing run must say why (its output reaches the error message), a hung one
must be stopped at the timeout, and coverage's hooks must not reach the child.
"""

from __future__ import annotations

from pathlib import Path
import subprocess

import pytest

from reliability import harness

FAILING = """
def test_says_why():
    print("the balancer said no")
    assert False
"""

HANGING = """
import time

def test_hangs():
    time.sleep(60)
"""


def test_failing_run_reports_its_output(tmp_path: Path) -> None:
    """Exit status and output of a failing pytest file reach the caller."""
    test = tmp_path / "test_failing.py"
    test.write_text(FAILING, encoding="utf-8")
    # Outside the repository: no pyproject.toml, so the harness's asyncio mode
    # comes from the command line.
    run = harness.HarnessRun(
        test, log=tmp_path / "pytest.log", env={}, args=["-o", "asyncio_mode=auto"]
    )
    assert run.wait(timeout=110) == 1
    output = run.output()
    assert "the balancer said no" in output
    assert "1 failed" in output
    assert len(run.output(10)) == 10


def test_hung_run_is_killed_at_the_timeout(tmp_path: Path) -> None:
    """After the timeout the subprocess is killed and reaped, not left behind."""
    test = tmp_path / "test_hanging.py"
    test.write_text(HANGING, encoding="utf-8")
    run = harness.HarnessRun(test, log=tmp_path / "pytest.log", env={})
    with pytest.raises(subprocess.TimeoutExpired):
        run.wait(timeout=0.5)
    assert run.process.returncode is not None


def test_environment_without_coverage_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Coverage's subprocess hooks are dropped; everything else is kept."""
    monkeypatch.setenv("COV_CORE_SOURCE", "custom_components")
    monkeypatch.setenv("COVERAGE_PROCESS_START", "pyproject.toml")
    monkeypatch.setenv("SOAK_SEED", "7")
    env = harness.clean_environment()
    assert "COV_CORE_SOURCE" not in env
    assert "COVERAGE_PROCESS_START" not in env
    assert env["SOAK_SEED"] == "7"


def test_command_runs_this_interpreter() -> None:
    """pytest of this interpreter, quiet, without a cache folder, then the args."""
    command = harness.harness_command("bench/ha_part.py", ["-x"])
    assert command[1:] == [
        "-m",
        "pytest",
        "bench/ha_part.py",
        "-q",
        "-p",
        "no:cacheprovider",
        "-x",
    ]
