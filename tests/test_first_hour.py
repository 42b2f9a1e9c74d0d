"""A new user's first hour, from the repository as it is: the inbox and its README, what the
README promises about the commands, and where files and images go."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.support import FakeClock, wait_real

ROOT = Path(__file__).resolve().parents[1]


def test_the_repository_has_an_inbox_whose_readme_says_where_things_go():
    text = (ROOT / "inbox" / "README.md").read_text(encoding="utf-8")
    for needed in ("inbox/images/", "folders.images", "archive/", "failed/", "report.json", "rejected.csv",
                   "processing/", "*.csv", "*.xlsx", "sent, refused and missing"):
        assert needed in text, needed


def test_exports_dropped_in_the_inbox_are_not_committed_but_its_readme_is():
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout of the connector")

    def ignored(path: str) -> bool:
        return subprocess.run([git, "check-ignore", "-q", path], cwd=ROOT, timeout=30).returncode == 0

    assert ignored("inbox/products.csv") and ignored("inbox/images/mug.jpg") and ignored("inbox/stock.xlsx")
    assert not ignored("inbox/README.md")


# --- watch in a folder of its own ---------------------------------------------------------------

def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("S2S_")}


@pytest.mark.parametrize("config", [None, "api:\n  rate: 2\nwatch:\n  scan_interval: 1\n"],
                         ids=["no connector.yaml", "connector.yaml naming no folders"])
def test_watch_with_the_default_folders_makes_them_and_says_where_they_are(tmp_path, config):
    if config is not None:
        (tmp_path / "connector.yaml").write_text(config, encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "-m", "connector", "watch", "--sandbox"], cwd=tmp_path,
                            env={**_clean_env(), "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_real(lambda: (tmp_path / "processing").is_dir() or proc.poll() is not None, 30, "the folders")
        wait_real(lambda: (tmp_path / "archive").is_dir() or proc.poll() is not None, 5, "the folders")
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = proc.stdout.read()
    for name in ("inbox", "inbox/images", "processing", "archive", "failed"):
        assert (tmp_path / name).is_dir(), name
    lines = [line for line in output.splitlines() if "folders: " in line]
    assert len(lines) == 1, output
    assert f"inbox {tmp_path / 'inbox'}," in lines[0] and f"images {tmp_path / 'inbox' / 'images'}," in lines[0]
    assert f"archive {tmp_path / 'archive'}" in lines[0] and f"failed {tmp_path / 'failed'}" in lines[0]
    assert "created: inbox, images, processing, archive, failed" in lines[0]
    assert "unavailable" not in output


def test_a_configured_inbox_that_is_missing_is_never_created(tmp_path):
    from connector import watch
    from connector.config import load_settings
    from tests.test_watch import Records

    share = tmp_path / "mnt" / "erp-share"
    (tmp_path / "connector.yaml").write_text(f"folders:\n  inbox: {share}\nwatch:\n  scan_interval: 1\n",
                                             encoding="utf-8")
    settings = load_settings(tmp_path / "connector.yaml", {})
    records, log = Records(), logging.getLogger(f"test.first_hour.{id(tmp_path)}")
    log.addHandler(records)
    log.setLevel(logging.DEBUG)
    stop, clock = threading.Event(), FakeClock()

    class Idle:
        def run_file(self, path, *, mapping=None):
            raise AssertionError("nothing can be taken from a missing inbox")

        def drain(self) -> bool:
            return True

        def close(self) -> None:
            pass

    thread = threading.Thread(target=watch.serve, args=(settings, Idle), daemon=True,
                              kwargs={"stop": stop, "clock": clock, "log": log})
    thread.start()
    try:
        wait_real(lambda: records.events("inbox_unavailable"), 10, "the service to look for its inbox")
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert not share.exists() and not share.parent.exists()
    assert (tmp_path / "processing").is_dir()  # the folders that are the connector's own are made
    missing = records.events("inbox_missing")
    assert len(missing) == 1 and str(share) in missing[0].getMessage() and "never creates" in missing[0].getMessage()


# --- images: sent, refused, missing -------------------------------------------------------------

def test_push_summary_counts_images_sent_refused_and_missing(tmp_path, monkeypatch, capsys):
    from connector.cli import main

    for name in [k for k in os.environ if k.startswith("S2S_")]:
        monkeypatch.delenv(name)
    shutil.copytree(ROOT / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("*.py"))
    (tmp_path / "examples" / "images" / "mug.jpg").unlink()
    monkeypatch.chdir(tmp_path)
    assert main(["push", "examples/products.csv", "--sandbox"], clock=FakeClock()) == 0
    out = capsys.readouterr().out
    assert "images refused: 1, missing: 1 (not in examples/images)" in out  # photo-broken.jpg; mug.jpg
    assert "sent: 9 items, 3 images" in out
    report = json.loads((tmp_path / "reports" / "products.csv.report.json").read_text())
    counts = report["counts"]
    assert (counts["images_sent"], counts["images_refused"], counts["images_missing"]) == (3, 1, 1)
    assert report["images_folder"] == "examples/images"


@pytest.mark.parametrize("with_images, expect", [
    (False, "images sent 0, images refused 0, images missing 5 (not in {inbox}/images)"),
    (True, "images sent 4, images refused 1, images missing 0,"),
])
def test_the_log_line_of_a_watched_file_counts_its_images(tmp_path, make_sandbox, with_images, expect):
    from connector import watch
    from tests.support import pipeline_for, settings_for
    from tests.test_watch import Records

    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    settings = settings_for(tmp_path, sb)
    settings.watch.min_age, settings.watch.stable_interval, settings.watch.observer = 0.1, 0.2, "native"
    settings.folders.mappings = ROOT / "mappings"
    box = settings.folders.inbox
    box.mkdir()
    if with_images:  # what inbox/README.md asks for: the images in inbox/images/, before the export
        shutil.copytree(ROOT / "examples" / "images", box / "images")
    records, log = Records(), logging.getLogger(f"test.first_hour.{id(tmp_path)}")
    log.addHandler(records)
    log.setLevel(logging.INFO)
    stop = threading.Event()
    thread = threading.Thread(target=watch.serve, daemon=True, args=(settings, lambda: pipeline_for(tmp_path, sb, settings)),
                              kwargs={"stop": stop, "clock": FakeClock(), "log": log})
    thread.start()
    try:
        (box / "products.csv").write_bytes((ROOT / "examples" / "products.csv").read_bytes())
        wait_real(lambda: records.events("file_finished"), 30, "the file to be finished")
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    line = records.events("file_finished")[0].getMessage()
    assert "finished products.csv: done" in line and expect.format(inbox=box) in line, line
    counts = records.events("file_finished")[0].counts
    assert counts["images_sent"] + counts["images_refused"] + counts["images_missing"] == 5


# --- the README's Commands section says exactly what each command's --help offers ----------------

def _commands_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Commands")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    from connector.cli import build_parser

    parser = build_parser()
    return dict(next(a for a in parser._actions if a.dest == "command").choices)


def _options(sub: argparse.ArgumentParser) -> set[str]:
    return {o for action in sub._actions for o in action.option_strings if o.startswith("--") and o != "--help"}


def test_the_readme_says_which_shared_option_each_command_takes_and_help_agrees():
    lines = _commands_section().splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("| option |"))
    columns = _cells(lines[head])[1:]
    claimed: dict[str, set[str]] = {c: set() for c in columns}
    shared = set()
    for line in lines[head + 2:]:
        if not line.startswith("|"):
            break
        cells = _cells(line)
        option = re.search(r"--[a-z][a-z-]*", cells[0]).group(0)
        shared.add(option)
        for command, cell in zip(columns, cells[1:], strict=True):
            if cell:
                assert cell == "yes", f"README options table: {option} under {command} says {cell!r}"
                claimed[command].add(option)
    subcommands = _subcommands()
    assert set(columns) == set(subcommands), "README options table: one column per command (connector --help)"
    for command, sub in subcommands.items():
        offered = _options(sub) & shared
        assert offered == claimed[command], (
            f"connector {command} --help offers {sorted(offered)}, the README says {sorted(claimed[command])}")
        sub.parse_args([*(["x"] if command in ("push", "check", "show") else []), *_example_values(claimed[command])])


def _example_values(options: set[str]) -> list[str]:
    """The options with a value each takes, so parsing them proves they are accepted."""
    values = {"--config": ["c.yaml"], "--sandbox": [], "--log-level": ["DEBUG"], "--log-format": ["json"]}
    return [word for option in sorted(options) for word in [option, *values[option]]]


def test_the_readme_commands_table_names_only_real_options_and_all_of_them():
    rows = [line for line in _commands_section().splitlines() if line.startswith("| `connector ")]
    subcommands = _subcommands()
    listed = {}
    for row in rows:
        synopsis = _cells(row)[0].strip("`")
        command = synopsis.split()[1]
        listed[command] = synopsis
        named = set(re.findall(r"--[a-z][a-z-]*", synopsis))
        offered = _options(subcommands[command])
        assert named <= offered, f"README: connector {command} names {sorted(named - offered)}, not in its --help"
        if not synopsis.endswith("..."):  # "..." stands for more options, explained in the linked page
            shared = {"--config", "--sandbox", "--log-level", "--log-format"}
            own = offered - shared
            assert own <= named, f"README: connector {command} does not name {sorted(own - named)}"
    assert set(listed) == set(subcommands), "README: one row per command in the Commands table"


def test_the_quick_start_is_two_set_up_commands_and_the_second_is_what_ci_runs():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Quick start"):text.index("\n## ", text.index("## Quick start") + 1)]
    block = section[section.index("```sh\n") + 6:]
    block = block[:block.index("```")]
    commands = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    assert len(commands) == 2
    assert commands[0].endswith("connector push examples/products.csv --sandbox")  # run by test_cli's quick start
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[1] in ci
    assert re.search(r"\d+ s to install and \d+ .*to run the tests", section), "how long the tests take"
    steps = text[text.index("## From the sandbox to your Stock2Shop account"):]
    assert "`inbox/` in this folder" in steps and "inbox/images/" in steps and "connector sources" in steps
