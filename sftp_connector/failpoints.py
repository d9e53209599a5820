"""Named points where the fault tests stop the process for real (SIGKILL) at an exact moment.

`SFTP_CONNECTOR_FAILPOINTS=after-upload` (names separated by commas) makes the process kill
itself with SIGKILL when it reaches that point; unset, a point costs one dictionary lookup.
The points: after-download, after-decrypt, mid-merge (after the first batch is written,
before commit), after-upload (files placed, watermark not yet moved), mid-upgrade (a store
migration's first statement run, the upgrade's transaction open).
"""

from __future__ import annotations

import os
import signal

_ENV = "SFTP_CONNECTOR_FAILPOINTS"


def reached(name: str) -> None:
    """Given a point's name, kill this process if the environment names it."""
    wanted = os.environ.get(_ENV)
    if wanted and name in wanted.split(","):
        os.kill(os.getpid(), signal.SIGKILL)
