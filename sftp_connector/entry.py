"""The command's entry point: SIGTERM and SIGINT are noted from the first moment, before the command's modules
(polars, SQLAlchemy, paramiko: about a second) are imported.

A signal that arrives while the command starts is kept in `EARLY`; `cli` acts on it once it knows the
command: `run` records an interrupted run and exits 128 + the signal, any other command exits so at once.
"""

from __future__ import annotations

import signal
from typing import Any

EARLY: list[int] = []
"""Signals received before the command installed its own handlers."""
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def main() -> None:
    """Note stop signals, then run the command line."""
    for number in STOP_SIGNALS:
        signal.signal(number, _note)
    from sftp_connector.cli import app

    app()


def _note(number: int, _frame: Any) -> None:
    EARLY.append(number)
