"""One pytest file run through the Home Assistant test harness, in a subprocess.

The benchmark's Home Assistant parts (``bench/ha_part.py``) and the soak's
coordinator lane (``reliability/coordinator_lane.py``) need a real ``hass``
with registries and the mocked Bluetooth stack: exactly what the test harness
(``pytest-homeassistant-custom-component``) sets up. Both start it the same
way, with this runner::

    run = HarnessRun("bench/ha_part.py", log=folder / "pytest.log", env=...)
    returncode = run.wait(timeout=960)
    print(run.output())

The output goes to a file, not a pipe: the parent holds no descriptor for the
child while it runs (the soak counts its own), and a chatty child can never
block on a full pipe.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import os
from pathlib import Path
import subprocess
import sys

ROOT = Path(__file__).resolve().parent.parent
"""The repository: the subprocess's working directory."""
OUTPUT_TAIL = 4000
"""Characters of the subprocess's output kept for an error message."""


def clean_environment() -> dict[str, str]:
    """This process's environment, without coverage's subprocess hooks.

    A run under coverage makes the event loop several times slower, which the
    soak would see as a slow line and the benchmark as slow code; the code
    these runs drive is covered by the test suite itself.
    """
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("COV_", "COVERAGE_"))
    }


def harness_command(test: str | Path, args: Sequence[str] = ()) -> list[str]:
    """The pytest command line that runs *test* with this interpreter."""
    return [
        sys.executable,
        "-m",
        "pytest",
        str(test),
        "-q",
        "-p",
        "no:cacheprovider",
        *args,
    ]


class HarnessRun:
    """*test* run by pytest in a subprocess, started at once.

    *env* is added to :func:`clean_environment`; *args* follow the pytest
    options every run shares (quiet, no cache folder). The combined output
    goes to *log*.
    """

    def __init__(
        self,
        test: str | Path,
        *,
        log: Path,
        env: Mapping[str, str],
        args: Sequence[str] = (),
    ) -> None:
        """Start pytest."""
        self.log = log
        with log.open("wb") as output:
            self.process = subprocess.Popen(  # noqa: S603 - our interpreter, our file
                harness_command(test, args),
                cwd=ROOT,
                env=clean_environment() | dict(env),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def wait(self, timeout: float | None = None) -> int:
        """Wait for pytest and return its exit status.

        After *timeout* seconds pytest is killed and
        :class:`subprocess.TimeoutExpired` raised.
        """
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """Stop pytest now (and reap it)."""
        self.process.kill()
        self.process.wait()

    def output(self, limit: int = OUTPUT_TAIL) -> str:
        """The last *limit* characters pytest printed."""
        return self.log.read_text(encoding="utf-8", errors="replace")[-limit:]
