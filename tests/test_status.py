"""`connector status` and the state lock it reads: whether the service runs is told by who holds
the lock (a real process, a real flock), never by the age of a health file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from connector.config import Folders, Settings, WatchSettings
from connector.health import utc_now
from connector.lock import StateLock, holder
from connector.status import render_status

ROOT = Path(__file__).resolve().parents[1]
# A connector stand-in that holds the lock as `what`, says so on stdout, and waits to be stopped.
HOLD = ("import sys, time; from pathlib import Path; from connector.lock import StateLock\n"
        "with StateLock(Path(sys.argv[1]), sys.argv[2]):\n"
        "    print('held', flush=True); time.sleep(60)\n")


def settings_in(root: Path) -> Settings:
    folders = Folders(inbox=root / "inbox", processing=root / "processing", archive=root / "archive",
                      failed=root / "failed", state=root / "state")
    return Settings(folders=folders, watch=WatchSettings(health_file=folders.state / "health.json"))


def hold(state: Path, what: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(state), what], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def write_health(settings: Settings, pid: int) -> None:
    """What a service that was fine when it last wrote leaves behind."""
    settings.folders.state.mkdir(parents=True, exist_ok=True)
    health = {"state": "ok", "problems": [], "pid": pid, "updated_at": utc_now(), "last_scan_at": utc_now(),
              "observer": "native"}
    settings.watch.health_file.write_text(json.dumps(health), encoding="utf-8")


def test_holder_of_a_state_folder_that_never_ran_is_nobody_and_nothing_is_created(tmp_path):
    assert holder(tmp_path / "state") == holder(tmp_path / "state")
    found = holder(tmp_path / "state")
    assert not found.held and found.pid is None
    assert not (tmp_path / "state").exists()


def test_holder_names_the_live_holder_and_forgets_it_after_a_clean_release(tmp_path):
    with StateLock(tmp_path / "state", "watch"):
        found = holder(tmp_path / "state")
        assert found.held and found.pid == os.getpid() and found.what == "watch" and found.alive
    found = holder(tmp_path / "state")
    assert not found.held and found.pid is None


def test_holder_of_a_killed_connector_is_free_and_names_the_dead_pid(tmp_path):
    proc = hold(tmp_path / "state", "watch")
    assert holder(tmp_path / "state").held
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    found = holder(tmp_path / "state")
    assert not found.held and found.pid == proc.pid and found.what == "watch" and found.alive is False


def test_a_status_looking_at_the_lock_never_turns_a_starting_connector_away(tmp_path):
    """`holder` takes the lock for an instant; a connector starting in that instant tries again."""
    state = tmp_path / "state"
    with StateLock(state):  # the lock file exists, as it does after any earlier run
        pass
    probe = ("import sys, time; from pathlib import Path; from connector.lock import holder\n"
             "print('probing', flush=True); end = time.monotonic() + 1.0; n = 0\n"
             "while time.monotonic() < end: holder(Path(sys.argv[1])); n += 1\n"
             "print(n)\n")
    proc = subprocess.Popen([sys.executable, "-c", probe, str(state)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "probing"
        for _ in range(300):
            lock = StateLock(state, "push")
            lock.acquire()
            lock.release()
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert int(out) > 100  # it looked at the lock all the while


def test_status_says_running_only_while_the_service_holds_the_lock(tmp_path):
    settings = settings_in(tmp_path)
    proc = hold(settings.folders.state, "watch")
    try:
        write_health(settings, proc.pid)
        text = render_status(settings)
        assert text.startswith(f"Service: running (pid {proc.pid}); health: ok")
        assert "last scan:" in text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    text = render_status(settings)  # its health file still says "ok", and is fresh
    first = text.splitlines()[0]
    assert first.startswith("Service: not running (last seen running at ") and "ok" not in first
    assert f"pid {proc.pid}) ended without stopping cleanly" in text


def test_status_of_a_cleanly_stopped_service_is_not_running(tmp_path):
    settings = settings_in(tmp_path)
    with StateLock(settings.folders.state, "watch"):
        write_health(settings, os.getpid())
        assert render_status(settings).startswith(f"Service: running (pid {os.getpid()})")
    text = render_status(settings)
    assert text.startswith("Service: not running (last seen running at ") and "ended without stopping" not in text


def test_status_while_a_push_holds_the_state_folder(tmp_path):
    settings = settings_in(tmp_path)
    proc = hold(settings.folders.state, "push")
    try:
        text = render_status(settings)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert text.startswith(f"Service: not running; connector push (pid {proc.pid}) is using this state folder now")


def test_a_running_service_whose_health_stopped_moving_is_called_stuck(tmp_path):
    settings = settings_in(tmp_path)
    with StateLock(settings.folders.state, "watch"):
        settings.folders.state.mkdir(parents=True, exist_ok=True)
        settings.watch.health_file.write_text(json.dumps({"state": "ok", "updated_at": "2020-01-01T00:00:00Z"}))
        first = render_status(settings).splitlines()[0]
    assert "running" in first and "not updated since 2020-01-01T00:00:00Z: the service is stuck" in first


def test_sandbox_runs_keep_a_ledger_of_their_own_that_status_sandbox_shows(tmp_path, monkeypatch, capsys):
    from connector.cli import main
    from tests.support import FakeClock

    for name in [k for k in os.environ if k.startswith("S2S_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    export = ROOT / "examples" / "products.csv"
    for _ in range(2):  # each sandbox run starts afresh: a fresh sandbox API knows no products
        assert main(["push", str(export), "--sandbox"], clock=FakeClock()) == 0
        assert "sent: 9 items, 4 images; unchanged: 0 items" in capsys.readouterr().out
    assert main(["status", "--sandbox"], clock=FakeClock()) == 0
    shown = capsys.readouterr().out
    assert f"their own state folder {tmp_path / 'state' / 'sandbox'}" in shown
    assert "Service: not running" in shown and "products.csv: done" in shown and "Ledger: none yet" not in shown
    assert main(["status"], clock=FakeClock()) == 0
    real = capsys.readouterr().out
    assert "Ledger: none yet" in real and "connector status --sandbox" in real
    assert not (tmp_path / "state" / "ledger.sqlite").exists()


def test_status_cannot_tell_when_the_lock_file_cannot_be_opened(tmp_path):
    settings = settings_in(tmp_path)
    settings.folders.state.mkdir(parents=True)
    os.symlink(tmp_path / "elsewhere", settings.folders.state / "connector.lock")  # opened with O_NOFOLLOW
    assert holder(settings.folders.state).held is None
    assert render_status(settings).startswith("Service: cannot tell whether it runs: ")
