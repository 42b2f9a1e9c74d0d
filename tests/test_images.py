"""Locating, validating and encoding images: real JPEG/PNG files made with Pillow in tmp_path."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import random
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import pytest
from PIL import Image

from connector.images import MAX_BYTES, ImageError, encode_image, locate_images, validate_image
from connector.model import ImageRef, Product

# --- image makers -------------------------------------------------------------------------


def noise(size=(64, 48), seed=1) -> Image.Image:
    w, h = size
    return Image.frombytes("RGB", size, random.Random(seed).randbytes(w * h * 3))


def jpeg_bytes(size=(64, 48), seed=1) -> bytes:
    out = io.BytesIO()
    noise(size, seed).save(out, "JPEG", quality=90)
    return out.getvalue()


def png_bytes(size=(16, 16), seed=1) -> bytes:
    out = io.BytesIO()
    noise(size, seed).save(out, "PNG")
    return out.getvalue()


def gif_bytes() -> bytes:
    out = io.BytesIO()
    noise((8, 8)).convert("P").save(out, "GIF")
    return out.getvalue()


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_of_size(total: int) -> bytes:
    """A valid PNG of exactly `total` bytes, padded with a private ancillary chunk after IHDR."""
    base = png_bytes()
    head, rest = base[:33], base[33:]  # signature (8) + IHDR chunk (25)
    padding = total - len(base) - 12
    assert padding >= 0
    data = head + chunk(b"prVt", b"\0" * padding) + rest
    assert len(data) == total
    return data


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression-bomb shape)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def product_with(*names: str, variants: list[str | None] | None = None) -> Product:
    variants = variants or [None] * len(names)
    refs = [ImageRef(name=n, line=i + 2, column="image1", source_variant_code=v) for i, (n, v) in enumerate(zip(names, variants, strict=True))]
    return Product(code="P1", items=[], lines=[2], images=refs)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.jpg").write_bytes(jpeg_bytes(seed=1))
    (images / "b.png").write_bytes(png_bytes(seed=2))
    (tmp_path / "outside.jpg").write_bytes(jpeg_bytes(seed=3))
    return images


# --- locating -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, reason",
    [
        ("../outside.jpg", "goes up a folder"),
        ("sub/../../outside.jpg", "goes up a folder"),
        ("..\\outside.jpg", "goes up a folder"),
        ("/etc/passwd", "absolute path"),
        ("C:\\images\\a.jpg", "absolute path"),
        ("c:a.jpg", "absolute path"),
        ("\\\\server\\share\\a.jpg", "absolute path"),
        ("//server/share/a.jpg", "absolute path"),
        ("http://example.com/a.jpg", "is a URL"),
        ("https://example.com/a.jpg", "is a URL"),
        ("ftp://example.com/a.jpg", "is a URL"),
        ("file:///etc/passwd", "is a URL"),
        ("a\x00.jpg", "control characters"),
        ("a\n.jpg", "control characters"),
        ("missing.jpg", "no such file"),
        ("link-out.jpg", "outside the image folder"),
        ("dir.jpg", "not a regular file"),
        ("fifo.jpg", "not a regular file"),
    ],
)
@pytest.mark.timeout(10)  # a FIFO opened without O_NONBLOCK would block forever
def test_unsafe_or_unusable_image_names_are_refused_as_warnings(folder: Path, name: str, reason: str):
    (folder / "link-out.jpg").symlink_to(folder.parent / "outside.jpg")
    (folder / "dir.jpg").mkdir()
    if hasattr(os, "mkfifo"):
        os.mkfifo(folder / "fifo.jpg")
    elif name == "fifo.jpg":
        pytest.skip("no FIFOs on this platform")
    jobs, problems = locate_images(product_with(name, "a.jpg"), folder=folder)
    assert [j.image_id for j in jobs] == ["a.jpg"]  # the good image still goes
    assert jobs[0].main is True
    [problem] = problems
    assert reason in problem.reason
    assert (problem.kind, problem.severity, problem.line, problem.column, problem.value, problem.product) == (
        "image",
        "warning",
        2,
        "image1",
        name,
        "P1",
    )


def test_urls_are_reported_as_not_fetched_when_enabled(folder: Path):
    jobs, problems = locate_images(product_with("https://example.com/a.jpg"), folder=folder, allow_urls=True)
    assert jobs == []
    assert "not fetched by this connector yet" in problems[0].reason


def test_a_symlink_within_the_folder_is_followed_and_named_by_its_target(folder: Path):
    (folder / "alias.jpg").symlink_to(folder / "a.jpg")
    jobs, problems = locate_images(product_with("alias.jpg"), folder=folder)
    assert problems == []
    assert jobs[0].image_id == "a.jpg"
    assert jobs[0].path == str((folder / "a.jpg").resolve())


def test_validate_refuses_a_symlink_itself(folder: Path):
    (folder / "alias.jpg").symlink_to(folder / "a.jpg")
    with pytest.raises(ImageError, match="symbolic link"):
        validate_image(folder / "alias.jpg")


def test_subfolders_work_with_either_slash_and_image_id_is_the_posix_relative_path(folder: Path):
    (folder / "sub").mkdir()
    (folder / "sub" / "c.jpg").write_bytes(jpeg_bytes(seed=4))
    (folder / "sub" / "d.png").write_bytes(png_bytes(seed=5))
    jobs, problems = locate_images(product_with("sub\\c.jpg", " ./sub/d.png "), folder=folder)
    assert problems == []
    assert [j.image_id for j in jobs] == ["sub/c.jpg", "sub/d.png"]


def test_the_first_valid_image_is_main_and_order_is_kept(folder: Path):
    (folder / "bad.jpg").write_bytes(b"not an image at all")
    (folder / "c.jpg").write_bytes(jpeg_bytes(seed=6))
    jobs, problems = locate_images(product_with("bad.jpg", "b.png", "a.jpg", "c.jpg"), folder=folder)
    assert [(j.image_id, j.main) for j in jobs] == [("b.png", True), ("a.jpg", False), ("c.jpg", False)]
    assert [p.value for p in problems] == ["bad.jpg"]


def test_the_same_picture_is_sent_once_per_product(folder: Path):
    (folder / "copy-of-a.jpg").write_bytes((folder / "a.jpg").read_bytes())
    jobs, problems = locate_images(
        product_with("a.jpg", "b.png", "a.jpg", "copy-of-a.jpg"), folder=folder
    )
    assert problems == []
    assert [j.image_id for j in jobs] == ["a.jpg", "b.png"]


def test_jobs_carry_what_the_image_request_needs(folder: Path):
    data = (folder / "a.jpg").read_bytes()
    [job], _ = locate_images(product_with("a.jpg", variants=["P1-RED"]), folder=folder)
    assert (job.format, job.size, job.sha256) == ("JPEG", len(data), hashlib.sha256(data).hexdigest())
    assert (job.source_product_code, job.source_variant_code, job.line, job.column) == ("P1", "P1-RED", 2, "image1")
    assert Path(job.path).is_absolute()


def test_blank_names_are_ignored(folder: Path):
    assert locate_images(product_with("", "  "), folder=folder) == ([], [])


# --- validating ---------------------------------------------------------------------------


def test_a_jpg_that_is_a_png_inside_is_accepted_as_png(folder: Path):
    path = folder / "really-png.jpg"
    path.write_bytes(png_bytes())
    fmt, _, _ = validate_image(path)
    assert fmt == "PNG"


def test_a_truncated_jpeg_is_refused_though_verify_passes(folder: Path):
    data = jpeg_bytes(size=(256, 256))
    path = folder / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with Image.open(path) as im:
        im.verify()  # the weaker check is fooled...
    with pytest.raises(ImageError, match="could not be decoded"):
        validate_image(path)  # ...the full decode is not


def test_a_truncated_png_is_refused(folder: Path):
    data = png_bytes(size=(64, 64))
    path = folder / "cut.png"
    path.write_bytes(data[: len(data) - 40])
    with pytest.raises(ImageError):
        validate_image(path)


def test_exactly_2_mib_is_accepted(folder: Path):
    path = folder / "big.png"
    path.write_bytes(png_of_size(MAX_BYTES))
    assert validate_image(path)[0::2] == ("PNG", MAX_BYTES)


def test_one_byte_over_2_mib_is_refused_by_its_size(folder: Path):
    path = folder / "big.png"
    path.write_bytes(png_of_size(MAX_BYTES + 1))
    with pytest.raises(ImageError, match="2,097,153 bytes; the limit is 2,097,152"):
        validate_image(path)


def test_a_huge_file_is_refused_before_it_is_read(folder: Path):
    # 8 GiB, sparse: reading it would take far longer than the test's timeout allows
    path = folder / "huge.jpg"
    with open(path, "wb") as f:
        f.write(b"\xff\xd8\xff")
        f.truncate(8 * 1024**3)
    with pytest.raises(ImageError, match="the limit is 2,097,152 bytes"):
        validate_image(path)


@pytest.mark.parametrize(
    "width, height, reason",
    [
        (30_000, 30_000, "decompression bomb"),  # above 2x Pillow's limit: an error there too
        (10_000, 10_000, "decompression bomb"),  # above Pillow's limit: only a warning there
        (8_000, 6_000, "the limit is 40 megapixels"),  # under Pillow's limit, over ours
    ],
)
def test_pixel_bombs_are_refused_before_decoding(folder: Path, width: int, height: int, reason: str):
    path = folder / "bomb.png"
    path.write_bytes(png_header_only(width, height))
    assert path.stat().st_size < 100
    with pytest.raises(ImageError, match=reason):
        validate_image(path)


def test_the_bomb_guard_does_not_change_warning_filters_for_others(folder: Path):
    path = folder / "bomb.png"
    path.write_bytes(png_header_only(10_000, 10_000))
    before = list(warnings.filters)
    with pytest.raises(ImageError):
        validate_image(path)
    assert warnings.filters == before


@pytest.mark.parametrize(
    "data, reason",
    [
        (gif_bytes(), "GIF file"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "not a JPEG or PNG"),
        (b"PK\x03\x04" + b"\0" * 100, "not a JPEG or PNG"),
        (b"\xff\xd8\xff" + b"\0" * 100, "could not be decoded"),
        (b"", "empty"),
    ],
)
def test_files_that_are_not_jpeg_or_png_are_refused(folder: Path, data: bytes, reason: str):
    path = folder / "x.jpg"
    path.write_bytes(data)
    with pytest.raises(ImageError, match=reason):
        validate_image(path)


def test_a_png_with_a_zlib_bomb_text_chunk_is_refused(folder: Path):
    # zTXt inflating past Pillow's text limit raises a plain ValueError inside Pillow
    base = png_bytes()
    bomb = chunk(b"zTXt", b"k\0\0" + zlib.compress(b"\0" * (64 * 1024 * 1024), 9))
    path = folder / "ztxt.png"
    path.write_bytes(base[:33] + bomb + base[33:])
    with pytest.raises(ImageError, match="could not be decoded"):
        validate_image(path)


# --- encoding -----------------------------------------------------------------------------


def test_encode_returns_the_file_as_base64(folder: Path):
    [job], _ = locate_images(product_with("a.jpg"), folder=folder)
    assert base64.b64decode(encode_image(job)) == (folder / "a.jpg").read_bytes()


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda p: p.write_bytes(jpeg_bytes(seed=9)), "changed since it was checked"),
        (lambda p: p.unlink(), "no such file"),
        (lambda p: p.write_bytes(b"\xff\xd8\xff" + b"\0" * (MAX_BYTES + 10)), "the limit is"),
    ],
)
def test_encode_refuses_a_file_changed_since_it_was_checked(folder: Path, change, reason: str):
    [job], _ = locate_images(product_with("a.jpg"), folder=folder)
    change(folder / "a.jpg")
    with pytest.raises(ImageError, match=reason):
        encode_image(job)


@pytest.mark.skipif(sys.platform == "win32", reason="needs symlinks")
def test_encode_refuses_a_file_swapped_for_a_symlink(folder: Path):
    [job], _ = locate_images(product_with("a.jpg"), folder=folder)
    target = folder / "a.jpg"
    target.unlink()
    target.symlink_to(folder.parent / "outside.jpg")
    with pytest.raises(ImageError, match="symbolic link"):
        encode_image(job)


def test_with_no_image_folder_every_image_is_missing_and_unsafe_names_still_say_why(tmp_path: Path):
    names = ["a.jpg", "sub/b.png", "../up.jpg", "https://example.com/c.jpg", "/abs.jpg", ""]
    jobs, problems = locate_images(product_with(*names), folder=tmp_path / "no-such-folder")
    assert jobs == []
    assert [(p.value, p.reason) for p in problems] == [
        ("a.jpg", "no such file in the image folder"),
        ("sub/b.png", "no such file in the image folder"),
        ("../up.jpg", "the image name goes up a folder ('..'); give a name inside the image folder"),
        ("https://example.com/c.jpg", "the image name is a URL; give a file name inside the image folder"),
        ("/abs.jpg", "the image name is an absolute path; give a name relative to the image folder"),
    ]
    assert all(p.line is not None and p.column == "image1" for p in problems)


def test_names_a_pattern_made_that_are_not_files_are_not_images_but_a_named_file_missing_is_reported(folder):
    (folder / "a-1.jpg").write_bytes(jpeg_bytes(seed=3))
    made = [ImageRef(name=f"a-{n}.jpg", line=2, column=None) for n in (1, 2, 3)]  # {sku}-{n}.jpg, max 3
    named = ImageRef(name="gone.jpg", line=2, column="image1")
    jobs, problems = locate_images(Product(code="P1", items=[], lines=[2], images=[*made, named]), folder=folder)
    assert [Path(j.path).name for j in jobs] == ["a-1.jpg"]
    assert [(p.reason, p.column) for p in problems] == [("no such file in the image folder", "image1")]


def test_locating_images_leaves_no_reference_cycles(folder: Path):
    """plan_file pauses the cyclic collector while images are located: good, bad and missing
    images alike must be freed by reference counting alone (a fresh interpreter, so no other
    test's threads make garbage meanwhile)."""
    (folder / "cut.jpg").write_bytes(jpeg_bytes()[:400])
    (folder / "gif.jpg").write_bytes(gif_bytes())
    (folder / "text.jpg").write_bytes(b"not an image")
    (folder / "empty.png").write_bytes(b"")
    (folder / "link-out.jpg").symlink_to(folder.parent / "outside.jpg")
    names = ["a.jpg", "b.png", "cut.jpg", "gif.jpg", "text.jpg", "empty.png", "link-out.jpg", "gone.jpg",
             "../up.jpg", "https://example.com/c.jpg", "a\x00.jpg"]
    script = (
        "import gc, json, sys\n"
        "from pathlib import Path\n"
        "from connector.images import locate_images\n"
        "from connector.model import ImageRef, Product\n"
        "names, folder = json.loads(sys.argv[1]), Path(sys.argv[2])\n"
        "product = Product('P1', [], [2], images=[ImageRef(n, 2, 'image1') for n in names])\n"
        "locate_images(product, folder=folder)\n"  # modules loaded, caches filled
        "gc.collect()\n"
        "gc.disable()\n"
        "for place in (folder, folder / 'no-such-folder'):\n"
        "    jobs, problems = locate_images(product, folder=place)\n"
        "del jobs, problems\n"
        "print(len(names), gc.collect())\n"
    )
    done = subprocess.run([sys.executable, "-c", script, json.dumps(names), str(folder)], capture_output=True,
                          text=True, timeout=60, check=True)
    assert done.stdout.split() == [str(len(names)), "0"]
