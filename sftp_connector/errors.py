"""The one exception tree of sftp-connector, grouped by what the caller does next.

```
ConnectorError
├── ConfigError            invalid connector.yaml / goal / key permissions → exit 2, nothing runs
└── GoalError              goal + file + cause; the file is not marked imported, retried next run → exit 1
    ├── TransportError     .transient: retried with backoff inside the run first
    │   └── HostKeyError   unknown or changed host key: never retried
    ├── CryptoError        wrong passphrase, no key for recipient X, missing/wrong signature
    ├── InputError         unreadable CSV, encrypted while pgp disabled, reject ratio exceeded
    └── StoreError         database unavailable / constraint broken (the transaction rolled back)
                           or a store at another schema revision (`store upgrade`, or a newer version)
```

Row problems are data (`RowReject`), not exceptions: counted, written to the rejects file,
and the file goes on.
"""

from __future__ import annotations

from dataclasses import dataclass


class ConnectorError(Exception):
    """Base of every error sftp-connector raises on purpose."""


class ConfigError(ConnectorError):
    """Invalid configuration: nothing runs and the process exits with code 2.

    `problems` holds every problem found, each already prefixed with its file and key path.
    """

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class GoalError(ConnectorError):
    """A goal failed at run time: the file is not marked imported and is retried next run."""

    def __init__(self, cause: str, *, goal: str | None = None, file: str | None = None) -> None:
        self.cause = cause
        self.goal = goal
        self.file = file
        super().__init__(cause)

    def located(self, *, goal: str | None = None, file: str | None = None) -> GoalError:
        """Given the goal and file being worked on, fill them in where unknown; return self."""
        self.goal = self.goal or goal
        self.file = self.file or file
        return self

    def __str__(self) -> str:
        where = []
        if self.goal:
            where.append(f"goal {self.goal}")
        if self.file:
            where.append(f"file {self.file}")
        return f"{', '.join(where)}: {self.cause}" if where else self.cause


class TransportError(GoalError):
    """The SFTP server could not be reached or refused an operation.

    `transient` is true for network faults worth retrying with backoff.
    """

    def __init__(
        self,
        cause: str,
        *,
        goal: str | None = None,
        file: str | None = None,
        transient: bool = False,
    ) -> None:
        super().__init__(cause, goal=goal, file=file)
        self.transient = transient


class HostKeyError(TransportError):
    """The server's host key is unknown or changed: a security refusal, never retried."""


class CryptoError(GoalError):
    """Decryption, encryption or signature checking failed (in operator words)."""


class InputError(GoalError):
    """A file cannot be read as the goal describes it, or too many of its rows were rejected."""


class Interrupted(GoalError):
    """The connector is shutting down: the file in hand is rolled back and imported next run."""


class StoreError(GoalError):
    """The database refused or failed (the transaction was rolled back), or the store is at another schema
    revision than this code's: behind it (run `store upgrade`) or newer (run the newer version)."""


@dataclass(frozen=True, slots=True)
class RowReject:
    """One rejected row or cell: counted, written to the rejects file, and the file goes on.

    `row` is the 1-based data row number in the file; `column` is None for a whole row.
    """

    file: str
    row: int
    column: str | None
    reason: str
    value: str | None = None
