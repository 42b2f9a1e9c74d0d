"""A new user's first hour, from the repository as it is: the inbox and its README, what the
README promises about the commands, and where files and images go."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

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
