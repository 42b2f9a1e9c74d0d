"""The drop folders: candidates, readiness by our clock, claim, placing, and the state lock."""

from __future__ import annotations

import errno
import json
import os
import random
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connector import inbox
from connector.config import Folders
from connector.lock import AlreadyRunning, StateLock
from connector.model import Row
from tests.support import FakeClock, report_of

PATTERNS = ["*.csv", "*.xlsx", "*.xls", "*.ods"]
NOW = datetime(2025, 6, 14, 10, 15, 2, tzinfo=UTC)


def folders_in(root: Path) -> Folders:
    f = Folders(inbox=root / "inbox", processing=root / "processing", archive=root / "archive",
                failed=root / "failed", state=root / "state")
    for p in (f.inbox, f.processing, f.archive, f.failed):
        p.mkdir(parents=True)
    return f


def write(path: Path, data: bytes = b"sku,title\nA,Apple\n", mtime: float | None = None) -> Path:
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


# --- names ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, done_file, expected", [
    ("products.csv", False, True),
    ("PRODUCTS.CSV", False, True),
    ("Stock.Xlsx", False, True),
    ("prices.xls", False, True),
    ("sheet.ods", False, True),
    ("notes.txt", False, False),
    (".hidden.csv", False, False),
    ("~$products.xlsx", False, False),
    ("A1B2C3D4", False, False),  # Excel's extension-less temp save
    ("products.csv.tmp", False, False),
    ("products.csv.part", False, False),
    ("products.csv.filepart", False, False),
    ("products.csv.crdownload", False, False),
    ("products.tmp", False, False),
    ("products.csv.done", True, False),
    ("products.csv", True, True),
])
def test_candidate_names(name, done_file, expected):
    assert inbox.is_candidate_name(name, PATTERNS, done_file=done_file) is expected


def test_the_inbox_readme_and_images_folder_are_never_taken(tmp_path):
    """The repository's inbox/ holds a README.md for people and images/ for `watch`: neither is
    an export, even with patterns that would match them."""
    box = tmp_path / "inbox"
    (box / "images").mkdir(parents=True)
    write(box / "README.md", b"# Drop exports here\n")
    write(box / "readme.txt", b"notes\n")
    write(box / "images" / "mug.jpg", b"\xff\xd8\xff")
    write(box / "products.csv")
    for patterns in (PATTERNS, ["*"], ["*.md", "*.txt", "*.csv", "images"]):
        found = [c.path.name for c in inbox.list_inbox(box, patterns).candidates]
        assert found == ["products.csv"], patterns
        assert inbox.inspect(box / "README.md", patterns) is None
        assert inbox.inspect(box / "images", patterns) is None


def test_patterns_are_configurable_and_case_insensitive():
    assert inbox.is_candidate_name("EXPORT.TXT", ["*.txt"])
    assert not inbox.is_candidate_name("export.csv", ["*.txt"])


# --- listing ----------------------------------------------------------------------------------

def test_listing_skips_what_is_not_a_plain_export(tmp_path):
    box = tmp_path / "inbox"
    box.mkdir()
    write(box / "good.csv")
    write(box / "~$book.xlsx", b"owner")
    write(box / "book.xlsx", b"PK")  # open in Excel: its owner file exists
    write(box / "upload.csv.part")
    write(box / "ABCDEF12")
    (box / "folder.csv").mkdir()
    os.symlink(tmp_path / "elsewhere.csv", box / "link.csv")
    write(tmp_path / "elsewhere.csv")
    os.mkfifo(box / "pipe.csv")
    names = sorted(c.path.name for c in inbox.list_inbox(box, PATTERNS).candidates)
    assert names == ["good.csv"]


def test_listing_names_workbooks_held_open_by_an_owner_file(tmp_path):
    box = tmp_path / "inbox"
    box.mkdir()
    write(box / "book.xlsx", b"PK")
    write(box / "~$book.xlsx", b"owner", mtime=1_000_000)
    write(box / "free.xlsx", b"PK")
    listing = inbox.list_inbox(box, PATTERNS)
    assert [c.path.name for c in listing.candidates] == ["free.xlsx"]
    assert [(h.path.name, h.owner.name, h.owner_mtime) for h in listing.open_workbooks] == [
        ("book.xlsx", "~$book.xlsx", 1_000_000)]


def test_done_file_mode_takes_only_files_with_their_done_file(tmp_path):
    box = tmp_path / "inbox"
    box.mkdir()
    write(box / "orders.csv")
    write(box / "prices.csv")
    write(box / "orders.csv.done", b"")
    names = [c.path.name for c in inbox.list_inbox(box, PATTERNS, done_file=True).candidates]
    assert names == ["orders.csv"]


def test_listing_a_missing_inbox_raises_instead_of_reporting_no_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        inbox.list_inbox(tmp_path / "gone", PATTERNS)


def test_order_is_oldest_first_then_name_and_the_cap_comes_after_sorting(tmp_path):
    cands = [inbox.Candidate(tmp_path / n, 1, t) for n, t in [("c.csv", 5), ("b.csv", 1), ("a.csv", 5), ("z.csv", 0)]]
    assert [c.path.name for c in inbox.order(cands)] == ["z.csv", "b.csv", "a.csv", "c.csv"]
    assert [c.path.name for c in inbox.order(cands, limit=2)] == ["z.csv", "b.csv"]


# --- readiness --------------------------------------------------------------------------------

def cand(size: int, mtime: int = 1, name: str = "f.csv") -> inbox.Candidate:
    return inbox.Candidate(Path("/inbox") / name, size, mtime)


def test_ready_only_after_two_equal_checks_apart_and_min_age_by_our_clock():
    clock = FakeClock()
    r = inbox.Readiness(min_age=10, stable_interval=2, clock=clock)
    assert r.observe(cand(5)) == "wait"  # first sight
    clock.advance(2)
    assert r.observe(cand(5)) == "wait"  # stable, but known for only 2 s
    clock.advance(8)
    assert r.observe(cand(5)) == "ready"


def test_a_growing_file_restarts_the_stability_window():
    clock = FakeClock()
    r = inbox.Readiness(min_age=0, stable_interval=2, clock=clock)
    r.observe(cand(5))
    clock.advance(3)
    assert r.observe(cand(9)) == "wait"  # grew
    clock.advance(1)
    assert r.observe(cand(9)) == "wait"  # same, but only 1 s apart
    clock.advance(1)
    assert r.observe(cand(9)) == "ready"


def test_an_old_mtime_from_the_writer_does_not_make_a_file_ready_early():
    clock = FakeClock()
    r = inbox.Readiness(min_age=30, stable_interval=0, clock=clock)
    r.observe(cand(5, mtime=1))  # mtime from 1970: the writer's clock means nothing to us
    clock.advance(1)
    assert r.observe(cand(5, mtime=1)) == "wait"


@pytest.mark.parametrize("allow_empty, expected", [(False, "empty"), (True, "ready")])
def test_zero_byte_files_are_refused_unless_allowed(allow_empty, expected):
    clock = FakeClock()
    r = inbox.Readiness(min_age=0, stable_interval=1, allow_empty=allow_empty, clock=clock)
    assert r.observe(cand(0)) == "wait"  # a writer may create the file first and fill it later
    clock.advance(1)
    assert r.observe(cand(0)) == expected


def test_due_in_tells_when_the_next_check_can_make_a_file_ready():
    clock = FakeClock()
    r = inbox.Readiness(min_age=5, stable_interval=2, clock=clock)
    assert r.due_in() is None
    r.observe(cand(5))
    assert r.due_in() == 5
    clock.advance(6)
    assert r.due_in() == 0
    r.keep_only([])
    assert r.due_in() is None


# Each step: (seconds since the previous check, size seen) -> verdict. min_age 10, stable_interval 2.
@pytest.mark.parametrize("steps", [
    # arrives complete: not held up beyond min_age
    [(0, 100, "wait"), (10, 100, "ready")],
    # seen growing: the writer was at work 2 s before, so not yet; quiet for min_age after the change
    [(0, 100, "wait"), (8, 200, "wait"), (2, 200, "wait"), (7, 200, "wait"), (1, 200, "ready")],
    # a pause in the writing restarts the quiet period every time
    [(0, 10, "wait"), (5, 20, "wait"), (9, 20, "wait"), (1, 30, "wait"), (10, 30, "ready")],
    # truncated and rewritten: zero bytes after a change is never "empty" right away
    [(0, 100, "wait"), (9, 0, "wait"), (2, 0, "wait"), (8, 0, "empty")],
    # born empty: refused as empty only after the full quiet period
    [(0, 0, "wait"), (2, 0, "wait"), (8, 0, "empty")],
    [(0, 0, "wait"), (9, 0, "wait"), (1, 50, "wait"), (10, 50, "ready")],  # the ERP finished its query
])
def test_readiness_waits_for_quiet_after_the_last_change(steps):
    clock = FakeClock()
    r = inbox.Readiness(min_age=10, stable_interval=2, clock=clock)
    verdicts = []
    for advance, size, _ in steps:
        clock.advance(advance)
        verdicts.append(r.observe(cand(size, mtime=size)))
    assert verdicts == [v for _, _, v in steps]


def test_no_file_is_ever_taken_within_stable_interval_of_its_last_observed_change():
    rng = random.Random(7)
    for _ in range(300):
        clock = FakeClock()
        min_age, stable = rng.choice([0, 1, 10]), rng.choice([0.5, 2])
        r = inbox.Readiness(min_age=min_age, stable_interval=stable, clock=clock)
        size, last_change = 1, clock.monotonic()
        r.observe(cand(size))
        for _ in range(20):
            clock.advance(rng.choice([0.2, 0.5, 1, 3]))
            if rng.random() < 0.3:
                size, last_change = size + 1, clock.monotonic()
            if r.observe(cand(size)) == "ready":
                assert clock.monotonic() - last_change >= stable
                break


# --- claim ------------------------------------------------------------------------------------

def test_claim_moves_the_file_into_processing(tmp_path):
    f = folders_in(tmp_path)
    src = write(f.inbox / "a.csv")
    claimed = inbox.claim(src, f.processing).path
    assert claimed == f.processing / "a.csv"
    assert claimed.read_bytes() == b"sku,title\nA,Apple\n"
    assert not src.exists()


def test_claim_of_a_vanished_file_means_not_ready(tmp_path):
    f = folders_in(tmp_path)
    assert inbox.claim(f.inbox / "gone.csv", f.processing) == inbox.Claim()  # no path, no problem


def test_claim_never_overwrites_a_file_of_the_same_name_in_processing(tmp_path):
    f = folders_in(tmp_path)
    write(f.processing / "a.csv", b"in flight")
    src = write(f.inbox / "a.csv", b"new")
    assert inbox.claim(src, f.processing) == inbox.Claim()
    assert (f.processing / "a.csv").read_bytes() == b"in flight"
    assert src.read_bytes() == b"new"


@pytest.mark.parametrize("error, hint", [
    (OSError(errno.EXDEV, "Invalid cross-device link"), "another filesystem"),
    (PermissionError(errno.EACCES, "Permission denied"), "must be allowed"),
    (PermissionError(errno.EPERM, "Operation not permitted"), "must be allowed"),
    (OSError(errno.EROFS, "Read-only file system"), "read-only"),
    (OSError(errno.ENOSPC, "No space left on device"), "no space left"),
    (OSError(errno.EIO, "Input/output error"), "Input/output error"),
])
def test_a_claim_that_needs_a_person_says_why_naming_the_file(error, hint):
    problem = inbox.claim_problem(error, Path("/inbox/orders.csv"), Path("/drop/processing"))
    assert problem is not None and "orders.csv" in problem and hint in problem


class SharingViolation(PermissionError):
    """What Windows raises when the writer holds the file open (OSError sets winerror only there)."""

    winerror = 32


@pytest.mark.parametrize("error", [
    FileNotFoundError(errno.ENOENT, "No such file or directory"),  # vanished: not ready
    SharingViolation(errno.EACCES, "The process cannot access the file"),  # Windows: writer holds it
])
def test_a_vanished_or_busy_file_only_means_not_ready(error):
    assert inbox.claim_problem(error, Path("/inbox/orders.csv"), Path("/drop/processing")) is None


def test_claim_into_processing_on_another_filesystem_reports_the_problem(tmp_path):
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        pytest.skip("no writable /dev/shm to stand for another filesystem")
    f = folders_in(tmp_path)
    if os.stat(shm).st_dev == os.stat(f.inbox).st_dev:
        pytest.skip("/dev/shm is on the same filesystem as the test folder here")
    import tempfile

    with tempfile.TemporaryDirectory(dir=shm) as other:
        src = write(f.inbox / "a.csv")
        result = inbox.claim(src, Path(other))
        assert result.path is None and "another filesystem" in result.problem and "a.csv" in result.problem
    assert src.exists()


def test_a_file_that_changed_while_being_claimed_goes_back_to_the_inbox(tmp_path):
    f = folders_in(tmp_path)
    src = write(f.inbox / "late.csv", b"")
    judged = inbox.inspect(src, PATTERNS)
    with open(src, "ab") as out:  # the ERP was still querying and now writes
        out.write(b"sku\nA\n")
    result = inbox.claim(src, f.processing, expect=judged.signature)
    assert result == inbox.Claim(changed=True)
    assert src.read_bytes() == b"sku\nA\n" and list(f.processing.iterdir()) == []


def test_a_file_unchanged_since_it_was_judged_is_claimed(tmp_path):
    f = folders_in(tmp_path)
    src = write(f.inbox / "a.csv")
    result = inbox.claim(src, f.processing, expect=inbox.inspect(src, PATTERNS).signature)
    assert result.path == f.processing / "a.csv" and not result.changed


def test_claim_in_done_file_mode_takes_the_done_file_along(tmp_path):
    f = folders_in(tmp_path)
    src = write(f.inbox / "orders.csv")
    write(f.inbox / "orders.csv.done", b"")
    inbox.claim(src, f.processing, done_file=True)
    assert sorted(p.name for p in f.processing.iterdir()) == ["orders.csv", "orders.csv.done"]
    assert list(f.inbox.iterdir()) == []


def test_list_processing_is_oldest_first_and_skips_sidecars(tmp_path):
    f = folders_in(tmp_path)
    write(f.processing / "new.csv", mtime=2000)
    write(f.processing / "old.csv", mtime=1000)
    write(f.processing / "old.csv.done", b"", mtime=10)
    assert [p.name for p in inbox.list_processing(f.processing)] == ["old.csv", "new.csv"]


# --- place ------------------------------------------------------------------------------------

def test_done_file_is_archived_by_date_with_its_report(tmp_path):
    f = folders_in(tmp_path)
    path = write(f.processing / "PRODUCTS.csv")
    outcome = report_of("done", {"file": "PRODUCTS.csv", "sha256": "3fa9c1d2" + "0" * 56, "counts": {"products": 1}})
    placed = inbox.place(path, outcome, f, NOW)
    assert placed == f.archive / "2025/06/14/PRODUCTS__20250614T101502Z__3fa9c1d2.csv"
    assert placed.read_bytes() == b"sku,title\nA,Apple\n"
    report = json.loads(Path(str(placed) + ".report.json").read_text())
    assert report["counts"]["products"] == 1 and report["status"] == "done"
    assert not path.exists()


def test_refused_file_goes_to_failed_with_error_and_rejected_rows(tmp_path):
    f = folders_in(tmp_path)
    path = write(f.processing / "stock.csv")
    outcome = report_of("refused", {"file": "stock.csv"}, ["sku", "price"],
                          [(Row(3, {"sku": "X", "price": "=1+1"}), "price: not a number")],
                          message="stock.csv: refused: no row of the file could be sent")
    placed = inbox.place(path, outcome, f, NOW)
    assert placed.parent == f.failed / "2025/06/14"
    assert placed.name.startswith("stock__20250614T101502Z__") and placed.suffix == ".csv"
    error = json.loads(Path(str(placed) + ".error.json").read_text())
    assert error["message"] == "stock.csv: refused: no row of the file could be sent"
    rejected = Path(str(placed) + ".rejected.csv").read_text(encoding="utf-8-sig")
    assert "price: not a number" in rejected and "'=1+1" in rejected


def test_duplicate_is_archived(tmp_path):
    f = folders_in(tmp_path)
    path = write(f.processing / "a.csv")
    placed = inbox.place(path, report_of("duplicate", {}), f, NOW)
    assert placed.is_relative_to(f.archive)
    digest = inbox.sha256_of(placed)
    assert placed.name == f"a__20250614T101502Z__{digest[:8]}.csv"  # hashed from the file when the report has none


def test_a_waiting_file_cannot_be_placed(tmp_path):
    f = folders_in(tmp_path)
    path = write(f.processing / "a.csv")
    with pytest.raises(ValueError):
        inbox.place(path, report_of("waiting", {}), f, NOW)
    assert path.exists()


def test_placing_the_same_content_twice_in_a_second_adds_a_counter(tmp_path):
    f = folders_in(tmp_path)
    first = inbox.place(write(f.processing / "a.csv"), report_of("done", {}), f, NOW)
    second = inbox.place(write(f.processing / "a.csv"), report_of("duplicate", {}), f, NOW)
    assert first != second and second.name.endswith("__2.csv")
    assert first.exists() and second.exists()
    assert Path(str(second) + ".report.json").exists()


def test_the_done_file_moves_with_its_data_file(tmp_path):
    f = folders_in(tmp_path)
    path = write(f.processing / "orders.csv")
    write(f.processing / "orders.csv.done", b"")
    placed = inbox.place(path, report_of("done", {}), f, NOW)
    assert Path(str(placed) + ".done").exists()
    assert list(f.processing.iterdir()) == []


def test_empty_file_outcome_says_why(tmp_path):
    outcome = inbox.refuse_empty(tmp_path / "x.csv")
    assert outcome.status == "refused" and "empty (0 bytes)" in outcome.message and "allow_empty" in outcome.message


def test_recent_sidecars_are_newest_first_across_days(tmp_path):
    f = folders_in(tmp_path)
    for day in (13, 14):
        when = NOW.replace(day=day)
        inbox.place(write(f.processing / f"d{day}.csv"), report_of("done", {}), f, when)
    names = [p.name for p in inbox.recent_sidecars(f.archive, ".report.json", limit=5)]
    assert names[0].startswith("d14__") and names[1].startswith("d13__") and len(names) == 2
    assert inbox.count_files(f.archive) == 2


# --- the state lock ---------------------------------------------------------------------------

def test_state_lock_creates_a_private_folder_and_lock_file(tmp_path):
    state = tmp_path / "state"
    with StateLock(state):
        assert (state.stat().st_mode & 0o777) == 0o700
        lock = state / "connector.lock"
        assert (lock.stat().st_mode & 0o777) == 0o600
        assert lock.read_text().strip() == str(os.getpid())


def test_a_second_process_on_the_same_state_folder_is_refused_naming_folder_and_pid(tmp_path):
    state = tmp_path / "state"
    code = (
        "import sys; from pathlib import Path; from connector.lock import StateLock, AlreadyRunning\n"
        "try:\n    StateLock(Path(sys.argv[1])).acquire()\nexcept AlreadyRunning as e:\n    print(e); sys.exit(3)\n"
    )
    with StateLock(state):
        run = subprocess.run([sys.executable, "-c", code, str(state)], capture_output=True, text=True, timeout=30,
                             cwd=Path(__file__).resolve().parents[1])
    assert run.returncode == 3, run.stderr
    assert str(state) in run.stdout and f"process {os.getpid()}" in run.stdout


def test_the_lock_is_free_again_after_release(tmp_path):
    with StateLock(tmp_path / "s"):
        pass
    with StateLock(tmp_path / "s"):
        pass


def test_a_second_lock_in_the_same_process_is_refused(tmp_path):
    with StateLock(tmp_path / "s"):
        with pytest.raises(AlreadyRunning):
            StateLock(tmp_path / "s").acquire()


def test_a_symlinked_lock_file_is_refused(tmp_path):
    state = tmp_path / "s"
    state.mkdir()
    os.symlink(tmp_path / "target", state / "connector.lock")
    with pytest.raises(AlreadyRunning, match="symlink"):
        StateLock(state).acquire()
    assert not (tmp_path / "target").exists()
