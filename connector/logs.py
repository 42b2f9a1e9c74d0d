"""Logging set-up: human-readable or JSON lines, with secrets redacted everywhere.

The Stock2Shop token travels in the query string (`?token=...`), so requests, urllib3 and
our own messages can all carry it (reference/reliability.md §3d). A filter on every handler
rewrites `token=...` and any registered secret before a record is formatted.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable

_TOKEN_IN_URL = re.compile(r"(token=)[^&\s'\"]+", re.IGNORECASE)
_TOKEN_IN_PATH = re.compile(r"(/valid_token/)[^/?\s'\"]+", re.IGNORECASE)
_TOKEN_IN_JSON = re.compile(r"(\"token\"\s*:\s*\")[^\"]*(\")", re.IGNORECASE)
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret (token, password) so it is redacted wherever it appears."""
    if value and len(value) >= 4:
        _secrets.add(value)


def redact(text: str) -> str:
    """`text` with every token and registered secret replaced by `***`."""
    text = _TOKEN_IN_URL.sub(r"\1***", text)
    text = _TOKEN_IN_PATH.sub(r"\1***", text)
    text = _TOKEN_IN_JSON.sub(r"\1***\2", text)
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


# The record factory that was in place before `install_redaction` wrapped it; None until then.
_previous_factory: Callable[..., logging.LogRecord] | None = None


def install_redaction() -> None:
    """Redact every log record as it is made, so no handler (ours, a test runner's, a
    library's) ever sees a token or a registered secret. Safe to call more than once."""
    global _previous_factory  # noqa: PLW0603 - one slot set once: the simplest install-once guard
    if _previous_factory is not None:
        return
    _previous_factory = previous = logging.getLogRecordFactory()

    def make_record(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a record factory must never raise; a malformed record is logging's to report
            return record
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return record

    logging.setLogRecordFactory(make_record)


class RedactFilter(logging.Filter):
    """Redacts a record's traceback (its message was redacted when the record was made)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        data.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_text:
            data["exception"] = record.exc_text
        return redact(json.dumps(data, default=str, ensure_ascii=False))


def setup_logging(level: str = "INFO", fmt: str = "text", stream=None) -> None:
    """Configure the root logger once: text (default) or JSON lines, with redaction."""
    install_redaction()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RedactFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # urllib3 logs full URLs (with the token) at DEBUG; keep it quiet unless asked for.
    logging.getLogger("urllib3").setLevel(logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING)
