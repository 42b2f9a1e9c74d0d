"""Every exception the connector raises, in one tree sorted by what the caller should do.

    ConnectorError
      FatalError        the setup is wrong; no retry fixes it (exit 2, `watch` degrades and waits)
        ConfigError       connector.yaml or the environment
        MappingError      a mapping file
        AuthFailed        the API refused the credentials themselves
        SetupError        wrong URL, TLS, a redirect: the API answered, but not as the API
        AlreadyRunning    another process holds the state folder
        LedgerError       the ledger is missing, damaged, or cannot be written (disk full, read-only)
      RetriableError    transient trouble: the work waits in the ledger and is sent later (exit 3)
        ApiUnavailable    429/5xx/timeouts outlasted the retry budget, or the API is unreachable
      RefusedData       the input is wrong: reported with its place, the rest goes on (exit 1)
        ReadError         the file as a whole cannot be read as a table
        DataRejected      the API refused a request's data
        CellError         one cell cannot become a value
        ImageError        one image cannot be used
        OversizedItem     one item is bigger than a request may be

`cli.py` turns these into exit codes and one-line messages in one table; nothing else
compares error kinds as text. Every message is redacted of configured secrets when it is made.
"""

from __future__ import annotations

from typing import Any, Literal

from connector.logs import redact

# The report's `error.kind` for each branch (`error_kind` on the class): what a person (and `watch`) does about it.
ErrorKind = Literal["setup", "mapping", "read", "data", "io", "internal"]


class ConnectorError(Exception):
    """The root: str() is one redacted line for a person."""

    error_kind: ErrorKind = "internal"

    def __init__(self, message: str = ""):
        super().__init__(redact(message))


class FatalError(ConnectorError):
    """No retry can fix this; a person must change the setup. Journaled work stays waiting."""

    error_kind: ErrorKind = "setup"


class RetriableError(ConnectorError):
    """Transient trouble; the work waits in the ledger and goes on the next attempt."""

    error_kind: ErrorKind = "io"


class RefusedData(ConnectorError):
    """The input itself is wrong; reported against its file, line, column or product."""

    error_kind: ErrorKind = "data"


# -- fatal -----------------------------------------------------------------------------------


class ConfigError(FatalError):
    """Every problem found in the configuration, one per line (`problems`)."""

    def __init__(self, problems: list[str]):
        self.problems = [redact(p) for p in problems]
        super().__init__("; ".join(self.problems))


class MappingError(FatalError):
    """Every problem found in a mapping, each `path.in.yaml: what is wrong (valid choices: ...)`."""

    error_kind: ErrorKind = "mapping"

    def __init__(self, problems: list[str], file: str | None = None):
        self.problems = problems
        self.file = file
        where = f"mapping {file}: " if file else "mapping: "
        super().__init__(where + "; ".join(problems))


class AlreadyRunning(FatalError):
    """Another process holds the state folder's lock. The message is one line for a person."""


class LedgerError(FatalError):
    """The ledger cannot be used: the message names its path, the real cause and what to do."""


# -- the API -------------------------------------------------------------------------------------


class ApiError(ConnectorError):
    """Mixed into every API error: the HTTP status, when there was one."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class AuthFailed(ApiError, FatalError):
    """The API refused the credentials themselves."""


class SetupError(ApiError, FatalError):
    """The API cannot be used as configured: wrong URL (404/405), a redirect, TLS."""


class ApiUnavailable(ApiError, RetriableError):
    """Transient trouble outlasted the retry budget; nothing is lost, the work waits."""


class DataRejected(ApiError, RefusedData):
    """The API refused the request's data (400/409/413/422).

    `errors`: [{"index", "field", "message"}, ...] as the API named them; `indexes` is the
    set of item indexes the answer names, or None when it names no item (the caller must
    then find the bad items itself, e.g. by splitting the request).
    """

    def __init__(self, message: str, status: int, errors: list[dict[str, Any]]):
        super().__init__(message, status)
        self.errors = errors
        found = {e.get("index") for e in errors if isinstance(e.get("index"), int)}
        self.indexes: set[int] | None = {i for i in found if isinstance(i, int)} or None


# -- refused data ----------------------------------------------------------------------------------


class ReadError(RefusedData):
    """A file-level problem: one line for a person, naming the file (and sheet/line).

    Raised `from` an OSError when the file could not be read right now (a share gone, a
    lock): that is transient, and the caller keeps the file waiting instead of refusing it.
    """

    error_kind: ErrorKind = "read"


class CellError(RefusedData):
    """A cell that cannot become a value. `reason` is the end of a sentence: 'is not a number'."""

    def __init__(self, reason: str, column: str | None = None, value: str | None = None, kind: str = "type"):
        super().__init__(reason)
        self.reason = reason
        self.column = column
        self.value = value
        self.kind = kind  # the Problem kind: type, required, options, status


class ImageError(RefusedData):
    """Why an image cannot be used; one sentence for a person."""


class OversizedItem(RefusedData):
    """One item of a product is bigger than a whole request may be."""

    def __init__(self, code: str, size: int, max_bytes: int):
        super().__init__(f"product {code!r}: one of its items is {size:,} bytes as JSON, "
                         f"more than the {max_bytes:,}-byte limit of a request")
        self.code = code
        self.size = size
