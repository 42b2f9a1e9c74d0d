"""Small helpers every stage shares: file identity, durable writes, the time format.

Kept here, in one place, so the ledger, the inbox, the reports and the health file write and
name things the same way, and no stage imports another stage for a helper.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any


def iso_utc(at: float) -> str:
    """A Unix time as the ISO 8601 UTC text every report, status and health file uses.

    >>> iso_utc(0)
    '1970-01-01T00:00:00Z'
    """
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def file_identity(path: Path) -> tuple[str, int, int]:
    """The file's sha256, size and modification time (ns), from one open of the file."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        mtime_ns = os.fstat(fh.fileno()).st_mtime_ns
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size, mtime_ns


def sha256_of(path: Path) -> str:
    return file_identity(path)[0]


def write_json_atomic(path: Path, data: dict[str, Any], *, mode: int = 0o644) -> None:
    """Write `data` as indented UTF-8 JSON to `path`, all or nothing, durably.

    A reader sees the old file or the new one, never half of one, and no temporary file is
    left behind, even when serialising fails.
    """
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"
    write_atomic(path, text.encode("utf-8"), mode=mode)


def write_atomic(path: Path, payload: bytes, *, mode: int = 0o644) -> None:
    """Temp file in the same folder, fsync, os.replace, fsync the folder."""
    folder = path.parent
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp makes 0600; reports are for support staff to read
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(folder)


def fsync_dir(folder: Path) -> None:
    """Make a rename durable. Not every filesystem can fsync a folder (SMB, Windows): best effort."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def schema_command(argv: list[str] | None, *, prog: str, text: str, path: Path) -> int:
    """`--schema` writes a published JSON Schema (`text`) to `path`; `--check` exits 1 when it differs.

    The one command behind `python -m connector.mapping` and `python -m connector.config`.
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog=prog, description="write or check the JSON Schema made from the definition")
    parser.add_argument("--schema", action="store_true", help=f"write {path.name} from the definition")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when the committed schema is not the generated one")
    parser.add_argument("--out", type=Path, default=path, help="where to write (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.is_file() else ""
        if current != text:
            print(f"{args.out} is out of date: run {prog} --schema", file=sys.stderr)
            return 1
        return 0
    if not args.schema:
        parser.print_help()
        return 2
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


# -- the messages and schemas of the two definitions (mapping.py and config.py) -----------------


def did_you_mean(given: Any, valid: tuple[Any, ...] | list[Any]) -> str:
    """`; did you mean "x"?` for the closest valid choice, or "" when none is close."""
    close = difflib.get_close_matches(str(given), [str(v) for v in valid], n=1, cutoff=0.6)
    return f'; did you mean "{close[0]}"?' if close else ""


def valid_choices(valid: tuple[Any, ...] | list[Any]) -> str:
    """`(valid choices: a, b)`; choices that are blank or punctuation are shown in quotes."""
    plain = all(isinstance(v, str) and v.replace("_", "").replace("-", "").isalnum() for v in valid)
    return f"(valid choices: {', '.join(str(v) if plain else json.dumps(v) for v in valid)})"


def published_schema(schema: dict[str, Any], *, schema_id: str, title: str,
                     drop_null_defaults: bool = False) -> dict[str, Any]:
    """A model's JSON Schema as published for editors: draft 2020-12, our id and title, and
    without what pydantic adds for Python's sake (titles; with `drop_null_defaults`, null defaults)."""

    def tidy(node: Any) -> Any:
        if isinstance(node, list):
            return [tidy(n) for n in node]
        if not isinstance(node, dict):
            return node
        out = {}
        for key, value in node.items():
            if key == "title" and isinstance(value, str):
                continue
            if drop_null_defaults and key == "default" and value is None:
                continue
            out[key] = " ".join(value.split()) if key == "description" and isinstance(value, str) else tidy(value)
        return out

    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": schema_id, **tidy(schema),
            "title": title}


def endpoint_parts(endpoint: str) -> tuple[str, str]:
    """(API url, source id) of an endpoint key `<url>#source=<id>` (pipeline.endpoint_of makes them)."""
    url, _, source = endpoint.partition("#source=")
    return url, source
