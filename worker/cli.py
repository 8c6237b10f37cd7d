"""``erasepro worker``: registered into the ``erasepro`` command (imported only when that command runs)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Register ``worker [--queues erase,generate] [--name N] [--burst] [--preload MODEL]``."""
    from worker.main import build_parser, cmd_worker

    p: argparse.ArgumentParser = subparsers.add_parser(
        "worker", help="run a job worker (GPU when present)",
        description="Run an RQ worker for the erase and/or generate queues (REDIS_URL, ERASEPRO_DATA_DIR).")
    build_parser(p)
    p.set_defaults(func=cmd_worker)
