"""Find, validate and encode product images, one at a time.

    jobs, problems = locate_images(product, folder=Path("images"))
    ...later, after the product's batch was acknowledged...
    text = encode_image(jobs[0])          # base64, ready for `image.image`

Image names come from spreadsheet cells and are untrusted: a name that is absolute, goes up
with `..`, is a URL, holds control characters, or resolves (through symlinks) outside the
image folder is refused before any file is opened. A file is then checked by its bytes, not
its name: at most 2 MiB (from fstat, before reading), JPEG or PNG by magic bytes, and fully
decoded by Pillow with the decompression-bomb guard raised to an error and a pixel cap of our
own. `verify()` alone is not enough: it passes a JPEG cut in half (reference/perf.md §6).

A bad image is a warning (kind "image"): it is left out and its product still goes.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import io
import os
import re
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

from .errors import ImageError
from .model import ImageJob, ImageRef, Problem, Product

MAX_BYTES = 2 * 1024 * 1024  # the API's limit per image (api-docs: "at most 2 MB")
MAX_PIXELS = 40_000_000  # far above any product photo; bounds decode memory to ~160 MB
_MAGIC = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG"}
# The reason of an image that is not in the image folder: counted apart from the refused ones
# (`is_missing`), because the fix is different (put it there, or point at the right folder).
MISSING = "no such file in the image folder"
# Formats people commonly export by mistake, named in the message so they know what to fix.
_OTHER_MAGIC = {b"GIF8": "GIF", b"RIFF": "WebP", b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"%PDF": "PDF"}
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_FETCHABLE = ("http://", "https://", "ftp://")
_DRIVE = re.compile(r"^[A-Za-z]:")
_SEPARATOR = re.compile(r"[\\/]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# No control character, separator or colon (URLs and drives have one): nothing to refuse, one part
_PLAIN = re.compile(r"[^\x00-\x1f\x7f\\/:]+")
# O_NONBLOCK so that a FIFO planted in the folder cannot block the open forever;
# regular files ignore it.
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


@dataclass(frozen=True)
class ImageFolder:
    """The image folder resolved once for a whole file: `base` (symlinks followed) and whether it exists.

    A file's 100,000 image names are looked up in one folder; resolving it (and finding it
    missing) once instead of per product and per name keeps `check` of an export whose images
    are elsewhere fast (3.4 s of 10 s per 100,000 names before).
    """

    base: Path
    exists: bool

    @classmethod
    def of(cls, folder: Path) -> ImageFolder:
        base = folder.resolve()
        return cls(base, base.is_dir())


def locate_images(
    product: Product, *, folder: Path | ImageFolder, allow_urls: bool = False
) -> tuple[list[ImageJob], list[Problem]]:
    """Locate and validate `product.images` inside `folder`.

    Returns the usable images as jobs, in the product's order, with the same picture (same
    sha256) kept once and `main=True` on the first one; and one warning Problem per image
    refused. Reads each file once, fully (at most 2 MiB), to check it.
    """
    place = folder if isinstance(folder, ImageFolder) else ImageFolder.of(folder)
    base = place.base
    jobs: list[ImageJob] = []
    problems: list[Problem] = []
    seen_paths: set[Path] = set()
    seen_hashes: set[str] = set()
    for ref in product.images:
        name = ref.name.strip()
        if not name:
            continue
        if not place.exists:  # every image is missing: said without an exception (and a redaction) per name
            problems.append(_problem(product, ref, _name_parts(name, allow_urls)[1] or MISSING))
            continue
        try:
            path = _resolve(name, place, allow_urls)
            if path in seen_paths:  # variant rows often repeat their product's picture
                continue
            seen_paths.add(path)
            fmt, digest, size = validate_image(path)
        except ImageError as exc:
            if ref.column is None and str(exc) == MISSING:
                continue  # a name a pattern made ({sku}-{n}.jpg): only the files that exist are images
            problems.append(_problem(product, ref, str(exc)))
            continue
        if digest in seen_hashes:
            continue
        seen_hashes.add(digest)
        jobs.append(
            ImageJob(
                path=str(path),
                sha256=digest,
                size=size,
                format=fmt,  # type: ignore[arg-type]  # validate_image returns only JPEG/PNG
                source_product_code=product.code,
                source_variant_code=ref.source_variant_code,
                image_id=path.relative_to(base).as_posix(),
                main=not jobs,
                line=ref.line,
                column=ref.column,
            )
        )
    return jobs, problems


def validate_image(path: Path) -> tuple[str, str, int]:
    """Check the file at `path` and return (format, sha256 hex, size in bytes).

    `format` is "JPEG" or "PNG", taken from the bytes, not the name. Raises ImageError when
    the file is a symlink, not a regular file, over 2 MiB, not JPEG/PNG, or does not decode.
    """
    data = _read_checked(path)
    fmt = _format_of(data)
    _decode(data, fmt)
    return fmt, hashlib.sha256(data).hexdigest(), len(data)


def encode_image(job: ImageJob) -> str:
    """Read the image of `job` again and return its bytes as base64 text.

    Raises ImageError when the file is gone or its bytes differ from what was checked, so a
    file replaced between check and send is never sent unchecked.
    """
    data = _read_checked(Path(job.path))
    if hashlib.sha256(data).hexdigest() != job.sha256:
        raise ImageError("the image file changed since it was checked; it was not sent")
    return base64.b64encode(data).decode("ascii")


def _resolve(name: str, place: ImageFolder, allow_urls: bool) -> Path:
    """The absolute path `name` names inside the folder, or ImageError saying why not."""
    parts, why = _name_parts(name, allow_urls)
    if why is not None:
        raise ImageError(why)
    base = place.base  # an existing folder: locate_images says every image of a missing one is missing
    try:
        path = base.joinpath(*parts).resolve(strict=True)
    except FileNotFoundError:
        raise ImageError(MISSING) from None
    except (OSError, RuntimeError):  # symlink loops, permissions, names too long
        raise ImageError("the image file cannot be reached") from None
    if not path.is_relative_to(base):
        raise ImageError("the image name leads outside the image folder (through a symbolic link)")
    return path


def _name_parts(name: str, allow_urls: bool) -> tuple[list[str], str | None]:
    """The folders and file `name` names, or why such a name is never looked up. No file is touched."""
    if _PLAIN.fullmatch(name) and name not in (".", ".."):
        return [name], None  # the usual name, a file in the folder itself: one match instead of the five below
    if _CONTROL.search(name):
        return [], "the image name contains control characters"
    if _URL.match(name):
        if allow_urls and name.lower().startswith(_FETCHABLE):
            return [], "image URLs are not fetched by this connector yet; put the file in the image folder"
        return [], "the image name is a URL; give a file name inside the image folder"
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return [], "the image name is an absolute path; give a name relative to the image folder"
    # Either slash separates folders: exports made on Windows write `sub\a.jpg`.
    parts = [p for p in _SEPARATOR.split(name) if p not in ("", ".")]
    if ".." in parts:
        return [], "the image name goes up a folder ('..'); give a name inside the image folder"
    return parts, None


def _read_checked(path: Path) -> bytes:
    """The bytes of the regular file `path`, at most MAX_BYTES, checked on the open fd."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise ImageError(MISSING) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageError("the image file is a symbolic link") from None
        raise ImageError(f"the image file cannot be opened ({exc.strerror})") from None
    try:
        info = os.fstat(fd)  # the fd, not the path: the path may have changed since
        if not stat.S_ISREG(info.st_mode):
            raise ImageError("the image name is not a regular file")
        if info.st_size > MAX_BYTES:
            raise ImageError(f"the image is {info.st_size:,} bytes; the limit is {MAX_BYTES:,} bytes (2 MB)")
        data = _read_at_most(fd, MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:  # grew while we read it
        raise ImageError("the image is over the 2 MB limit")
    if not data:
        raise ImageError("the image file is empty")
    return data


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    remaining = limit
    while remaining > 0:
        chunk = os.read(fd, min(remaining, 1024 * 1024))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _format_of(data: bytes) -> str:
    for magic, fmt in _MAGIC.items():
        if data.startswith(magic):
            return fmt
    for magic, other in _OTHER_MAGIC.items():
        if data.startswith(magic):
            raise ImageError(f"the image is a {other} file; only JPEG and PNG are accepted")
    raise ImageError("the file is not a JPEG or PNG image (checked by its content, not its name)")


def _decode(data: bytes, fmt: str) -> None:
    """Fully decode `data` as `fmt`, with bomb guards; ImageError on any failure."""
    from PIL import Image  # loaded by the first image file: a check whose images are elsewhere never needs it

    # catch_warnings restores the filters afterwards, so the stricter rule does not leak.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=[fmt]) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise ImageError(
                        f"the image is {width}x{height} pixels; the limit is {MAX_PIXELS // 1_000_000} megapixels"
                    )
                image.load()  # a full decode: verify() misses truncated JPEGs
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageError("the image has too many pixels (a possible decompression bomb)") from None
        except Image.UnidentifiedImageError:
            raise ImageError(f"the image could not be decoded: its {fmt} header is damaged") from None
        except Exception as exc:  # noqa: BLE001 - Pillow raises OSError, ValueError, SyntaxError... on bad data
            raise ImageError(f"the image could not be decoded: {_short(exc)}") from None


def is_missing(problem: Problem) -> bool:
    """True for the problem of an image that was not found in the image folder."""
    return problem.kind == "image" and problem.reason == MISSING


def _problem(product: Product, ref: ImageRef, reason: str) -> Problem:
    return Problem(
        kind="image",
        reason=reason,
        severity="warning",
        line=ref.line,
        column=ref.column,
        value=ref.name[:300],
        product=product.code,
    )


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split())[:200]
    return text or type(exc).__name__
