"""``python -m bench``: run the benchmark (see :mod:`bench.cli`)."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
