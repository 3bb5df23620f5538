"""What every part of the command line tool shares: names, exit codes, messages."""

from __future__ import annotations

import sys

PROG = "balancer"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
"""Usage errors and refused setting values (nothing was sent)."""
EXIT_INTERRUPTED = 130

BLE_SCAN_TIMEOUT = 10.0
LOOPBACK = "127.0.0.1"
MAX_SIMULATED_CELLS = 32


class UsageError(Exception):
    """A command line value that cannot be used; exit code 2."""


def print_error(message: str) -> None:
    """One ``balancer: error: ...`` line on stderr."""
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)


def print_warning(message: str) -> None:
    """One ``balancer: warning: ...`` line on stderr."""
    print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)
