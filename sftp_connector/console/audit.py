"""The console's audit log: every run started and every unmask, who and when (state/console-audit.jsonl).

One JSON object a line, appended, 0600 in the private state folder: `{"at": "…", "user": "…",
"action": "run|unmask|sign-in|sign-in-refused", "what": {…}}`. The log never holds a secret or a
profile's values: it says who looked, not what they saw.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from sftp_connector.private import private_dir
from sftp_connector.results import iso

FILE_NAME = "console-audit.jsonl"
_LOCK = threading.Lock()


def record(state_dir: Path, user: str, action: str, what: dict[str, Any]) -> None:
    """Append one entry to the audit log."""
    line = orjson.dumps({"at": iso(time.time()), "user": user, "action": action, "what": what}) + b"\n"
    folder = private_dir(state_dir)
    with _LOCK:
        fd = os.open(folder / FILE_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def entries(state_dir: Path, limit: int = 200) -> list[dict[str, Any]]:
    """Return the newest entries first (at most `limit`)."""
    path = state_dir / FILE_NAME
    if not path.exists():
        return []
    lines = path.read_bytes().splitlines()[-limit:]
    return [orjson.loads(line) for line in reversed(lines) if line.strip()]
