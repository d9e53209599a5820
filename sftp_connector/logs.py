"""Logging set-up: rich on a terminal, plain lines elsewhere, JSON on request; secrets redacted.

Messages carry remote file names and file contents, which a partner controls: JSON escapes
them, rich drops control codes, and plain lines escape control characters and indent every
line after the first, so that no name or value can forge a record of its own or a terminal
escape sequence.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Literal

import orjson

from sftp_connector.shown import visible

LogFormat = Literal["auto", "plain", "json", "rich"]
REDACTED = "***"


def safe_line(text: str) -> str:
    """Given a message, return it with control characters escaped (\\x1b) and later lines indented."""
    return visible(text, keep="\t\n").replace("\n", "\n    ")


class RedactSecrets(logging.Filter):
    """Replace every configured secret in a log record's message and arguments."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        for secret in self.secrets:
            message = message.replace(secret, REDACTED)
        record.msg, record.args = message, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self._redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True

    def _redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text


class PlainFormatter(logging.Formatter):
    """Plain lines whose message cannot forge another line (see `safe_line`)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = safe_line(record.message)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                 "logger": record.name, "message": record.getMessage()}
        if record.exc_text:
            entry["trace"] = record.exc_text
        return orjson.dumps(entry).decode()


def setup(level: int = logging.INFO, fmt: LogFormat = "auto", secrets: Iterable[str] = ()) -> None:
    """Given a level, a format and the secrets to hide, configure the root logger to stderr."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = _handler(fmt)
    handler.addFilter(RedactSecrets(secrets))
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("paramiko").setLevel(logging.WARNING)
    logging.getLogger("gnupg").setLevel(logging.ERROR)  # it logs key material at DEBUG


def add_secrets(secrets: Iterable[str]) -> None:
    """Given more secrets (once the configuration is loaded), hide them too."""
    for handler in logging.getLogger().handlers:
        for existing in handler.filters:
            if isinstance(existing, RedactSecrets):
                handler.removeFilter(existing)
                handler.addFilter(RedactSecrets([*existing.secrets, *secrets]))


def _handler(fmt: LogFormat) -> logging.Handler:
    if fmt == "json":
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        return handler
    if fmt == "rich" or (fmt == "auto" and sys.stderr.isatty()):
        from rich.logging import RichHandler

        return RichHandler(show_path=False, rich_tracebacks=False)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(PlainFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return handler
