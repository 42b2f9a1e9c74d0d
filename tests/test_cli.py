"""The command line as a person uses it: exit codes, one-line messages, reports, --help."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from connector.cli import build_parser
from connector.sandbox import Faults

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TOKEN_SHAPED = re.compile(r"\b[0-9a-f]{40}\b")  # the sandbox's tokens are 40 hex characters


def run(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 90) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("S2S_")}
    base["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "connector", *args], cwd=cwd, env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    shutil.copytree(EXAMPLES, tmp_path / "examples", ignore=shutil.ignore_patterns("*.py"))
    return tmp_path


@pytest.mark.parametrize("name", ["products.csv", "products.xlsx"])
def test_quick_start_push_to_the_built_in_sandbox(workdir, name):
    result = run(["push", f"examples/{name}", "--sandbox"], workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((workdir / "reports" / f"{name}.report.json").read_text())
    assert report["status"] == "done"
    assert report["counts"]["items_sent"] == 9 and report["counts"]["images_sent"] == 4
    rejected = (workdir / "reports" / f"{name}.rejected.csv").read_text(encoding="utf-8-sig")
    assert "12,5O" in rejected and "line" in rejected.splitlines()[0]
    assert f"{name}: done" in result.stdout


def test_strict_push_exits_1_when_rows_were_refused(workdir):
    result = run(["push", "examples/products.csv", "--sandbox", "--strict"], workdir)
    assert result.returncode == 1


def test_check_sends_nothing_and_writes_what_would_be_sent(workdir):
    result = run(["check", "examples/products.csv", "--out", "out"], workdir)
    assert result.returncode == 0, result.stderr
    items = json.loads((workdir / "out" / "products.csv.items.json").read_text())["system_products"]
    assert len(items) == 9
    assert all(isinstance(item["product"]["variants"], dict) for item in items)
    assert (workdir / "out" / "products.csv.rejected.csv").exists()
    assert "products" in result.stdout


def test_push_without_credentials_says_what_to_set(workdir):
    result = run(["push", "examples/products.csv"], workdir)
    assert result.returncode == 2
    assert "S2S_USERNAME" in result.stderr and "--sandbox" in result.stderr


def test_config_errors_are_listed_at_once_without_the_password(workdir):
    (workdir / "connector.yaml").write_text(
        "api:\n  password: hunter2-secret\n  rate: fast\n  colour: blue\nbatch:\n  max_items: 900\n", encoding="utf-8")
    result = run(["push", "examples/products.csv"], workdir, env={"S2S_PASSWORD": "hunter2-secret"})
    assert result.returncode == 2
    assert "api.rate" in result.stderr and "api.colour" in result.stderr and "batch.max_items" in result.stderr
    assert "hunter2-secret" not in result.stderr + result.stdout


def test_a_broken_mapping_is_a_usage_error(workdir):
    (workdir / "bad.yaml").write_text("name: bad\ngroup_by: sku\nvariant:\n  price: {column: price, type: decmal}\n",
                                      encoding="utf-8")
    result = run(["push", "examples/products.csv", "--sandbox", "--mapping", "bad.yaml"], workdir)
    assert result.returncode == 2
    assert "decmal" in result.stdout + result.stderr


def test_a_missing_file_is_a_usage_error(workdir):
    result = run(["push", "examples/nope.csv", "--sandbox"], workdir)
    assert result.returncode == 2 and "no such file" in result.stderr


def test_an_unreachable_api_leaves_the_work_waiting_with_exit_3(workdir):
    (workdir / "connector.yaml").write_text("api:\n  retry_budget: 2\n", encoding="utf-8")
    env = {"S2S_API_URL": "http://127.0.0.1:9", "S2S_USERNAME": "demo", "S2S_PASSWORD": "demo", "S2S_SOURCE_ID": "1"}
    result = run(["push", "examples/products.csv"], workdir, env=env)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "wait in the ledger" in result.stdout
    status = run(["status"], workdir, env=env)
    assert status.returncode == 0


def test_debug_logs_and_reports_never_show_the_token_or_password(make_sandbox, workdir):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0, users={"demo": "sentinel-pass-7d1e"},
                      faults=Faults(seed=3, expire_after=2, error_rate=0.2, drop_rate=0.1))
    env = {"S2S_API_URL": sb.url, "S2S_USERNAME": "demo", "S2S_PASSWORD": "sentinel-pass-7d1e", "S2S_SOURCE_ID": "1"}
    result = run(["push", "examples/products.csv", "--log-level", "DEBUG"], workdir, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    seen = result.stdout + result.stderr
    seen += "".join(p.read_text(encoding="utf-8-sig") for p in (workdir / "reports").iterdir())
    assert "token=***" in seen  # the DEBUG request lines were logged, redacted
    assert not TOKEN_SHAPED.findall(seen)
    assert "sentinel-pass-7d1e" not in seen


@pytest.mark.parametrize("command", ["push", "check", "watch", "status", "sandbox"])
def test_every_command_explains_itself_and_the_readme_names_it(command):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    help_text = sub.format_help()
    assert len(help_text) > 200
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"connector {command}" in readme
    for action in sub._actions:
        for option in action.option_strings:
            if option.startswith("--") and command in {"push", "check"} and option not in {"--help"}:
                assert option in readme, f"{command} {option} is not in the README"
