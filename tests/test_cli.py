"""The command line as a person uses it: exit codes, one-line messages, reports, --help.

The commands run in-process through `main(argv)` on a fake clock, with the test's folder as the
working directory and its own S2S_* environment; one smoke test runs the installed entry point.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from connector.cli import build_parser
from connector.sandbox import Faults
from tests.support import CliResult as Result
from tests.support import run_cli

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TOKEN_SHAPED = re.compile(r"\b[0-9a-f]{40}\b")  # the sandbox's tokens are 40 hex characters


@pytest.fixture
def run(monkeypatch, capsys) -> Callable[..., Result]:
    """`run(args, cwd, env)`: `connector ARGS` in `cwd` with only `env`'s S2S_* variables (support.run_cli)."""
    return lambda args, cwd, env=None: run_cli(monkeypatch, capsys, args, cwd, env)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    shutil.copytree(EXAMPLES, tmp_path / "examples", ignore=shutil.ignore_patterns("*.py"))
    return tmp_path


@pytest.mark.parametrize("name", ["products.csv", "products.xlsx"])
def test_quick_start_push_to_the_built_in_sandbox(run, workdir, name):
    result = run(["push", f"examples/{name}", "--sandbox"], workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((workdir / "reports" / f"{name}.report.json").read_text())
    assert report["status"] == "done"
    assert report["counts"]["items_sent"] == 9 and report["counts"]["images_sent"] == 4
    rejected = (workdir / "reports" / f"{name}.rejected.csv").read_text(encoding="utf-8-sig")
    assert "12,5O" in rejected and "line" in rejected.splitlines()[0]
    assert "12,5O" in _workbook_text(workdir / "reports" / f"{name}.rejected.xlsx")  # beside it, as a workbook
    assert f"{name}: done" in result.stdout


def test_strict_push_exits_1_when_rows_were_refused(run, workdir):
    result = run(["push", "examples/products.csv", "--sandbox", "--strict"], workdir)
    assert result.returncode == 1


def test_check_sends_nothing_and_writes_what_would_be_sent(run, workdir):
    result = run(["check", "examples/products.csv", "--out", "out"], workdir)
    assert result.returncode == 0, result.stderr
    items = json.loads((workdir / "out" / "products.csv.items.json").read_text())["system_products"]
    assert len(items) == 9
    assert all(isinstance(item["product"]["variants"], dict) for item in items)
    assert (workdir / "out" / "products.csv.rejected.csv").exists()
    assert "products" in result.stdout


@pytest.mark.parametrize(("folder", "name", "mapping", "waiting", "sent_alone"), [
    ("prestashop", "combinations_import.csv", "prestashop-combinations", 23, 0),  # every row joins a product
    ("akeneo", "products.csv", "akeneo-products", 240, 999),  # rows naming a product model join it
])
def test_check_of_a_join_file_says_what_a_push_does_with_its_rows(run, tmp_path, folder, name, mapping, waiting,
                                                                   sent_alone):
    export = ROOT.parent / "shared" / "corpus" / folder / name
    check = run(["check", str(export), "--mapping", mapping, "--out", "out"], tmp_path)
    assert check.returncode == 0, check.stderr
    checked = json.loads((tmp_path / "out" / f"{name}.report.json").read_text())
    assert "problems: none" not in check.stdout
    assert f"rows waiting for their product: {waiting} (for products " in check.stdout
    assert "a push sends them joined with those a file brought before, and keeps the others" in check.stdout
    assert len(json.loads((tmp_path / "out" / f"{name}.items.json").read_text())["system_products"]) == sent_alone
    reasons = [p["reason"] for p in checked["problems"] if p["kind"] == "waiting"]
    assert reasons and all("(check reads no catalogue)" in r for r in reasons)

    # a first push (nothing in the catalogue yet) does what check said
    push = run(["push", str(export), "--mapping", mapping, "--sandbox"], tmp_path)
    assert push.returncode == 0, push.stderr
    pushed = json.loads((tmp_path / "reports" / f"{name}.report.json").read_text())
    assert f"rows waiting for their product: {waiting} (for products " in push.stdout
    for key in ("rows_waiting", "products", "variants", "rows_refused", "products_held_back"):
        assert checked["counts"][key] == pushed["counts"][key], key
    assert checked["rows"] == pushed["rows"] and checked["problems_by_kind"] == pushed["problems_by_kind"]


def test_check_of_a_models_file_says_its_rows_are_product_models_as_a_first_push_does(run, tmp_path):
    """A models file's rows are product models, kept for the products naming them: check built 81 products
    of them where push sends none."""
    export = ROOT.parent / "shared" / "corpus" / "akeneo" / "product_models.csv"
    records = json.loads((ROOT.parent / "shared" / "corpus" / "facts.json").read_text())["files"][
        "akeneo/product_models.csv"]["records"]
    check = run(["check", str(export), "--mapping", "akeneo-models", "--out", "out"], tmp_path)
    assert check.returncode == 0, check.stderr
    checked = json.loads((tmp_path / "out" / "product_models.csv.report.json").read_text())
    assert json.loads((tmp_path / "out" / "product_models.csv.items.json").read_text())["system_products"] == []
    line = f"product models: {records}, kept for the products that name them (sent as those products, never alone)"
    assert line in check.stdout and "built: 0 products, 0 variants" in check.stdout

    push = run(["push", str(export), "--mapping", "akeneo-models", "--sandbox"], tmp_path)
    assert push.returncode == 0, push.stderr
    pushed = json.loads((tmp_path / "reports" / "product_models.csv.report.json").read_text())
    assert line in push.stdout
    for key in ("product_models", "products", "variants", "rows_waiting", "rows_refused", "products_held_back",
                "images_found"):
        assert checked["counts"][key] == pushed["counts"][key], key
    assert pushed["counts"]["product_models"] == records and pushed["counts"]["items_sent"] == 0
    assert checked["rows"] == pushed["rows"] and checked["problems_by_kind"] == pushed["problems_by_kind"]


def test_push_without_credentials_says_what_to_set(run, workdir):
    result = run(["push", "examples/products.csv"], workdir)
    assert result.returncode == 2
    assert "S2S_USERNAME" in result.stderr and "--sandbox" in result.stderr


def test_config_errors_are_listed_at_once_without_the_password(run, workdir):
    (workdir / "connector.yaml").write_text(
        "api:\n  password: hunter2-secret\n  rate: fast\n  colour: blue\nbatch:\n  max_items: 900\n", encoding="utf-8")
    result = run(["push", "examples/products.csv"], workdir, env={"S2S_PASSWORD": "hunter2-secret"})
    assert result.returncode == 2
    assert "api.rate" in result.stderr and "api.colour" in result.stderr and "batch.max_items" in result.stderr
    assert "hunter2-secret" not in result.stderr + result.stdout


def test_a_broken_mapping_is_a_usage_error(run, workdir):
    (workdir / "bad.yaml").write_text("name: bad\ngroup_by: sku\nvariant:\n  price: {column: price, type: decmal}\n",
                                      encoding="utf-8")
    result = run(["push", "examples/products.csv", "--sandbox", "--mapping", "bad.yaml"], workdir)
    assert result.returncode == 2
    assert "decmal" in result.stdout + result.stderr


def test_a_missing_file_is_a_usage_error(run, workdir):
    result = run(["push", "examples/nope.csv", "--sandbox"], workdir)
    assert result.returncode == 2 and "no such file" in result.stderr


def test_an_unreachable_api_leaves_the_work_waiting_with_exit_3(run, workdir):
    (workdir / "connector.yaml").write_text("api:\n  retry_budget: 2\n", encoding="utf-8")
    env = {"S2S_API_URL": "http://127.0.0.1:9", "S2S_USERNAME": "demo", "S2S_PASSWORD": "demo", "S2S_SOURCE_ID": "1"}
    result = run(["push", "examples/products.csv"], workdir, env=env)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "wait in the ledger" in result.stdout
    status = run(["status"], workdir, env=env)
    assert status.returncode == 0


def test_debug_logs_and_reports_never_show_the_token_or_password(run, make_sandbox, workdir):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0, users={"demo": "sentinel-pass-7d1e"},
                      faults=Faults(seed=3, expire_after=2, error_rate=0.2, drop_rate=0.1))
    env = {"S2S_API_URL": sb.url, "S2S_USERNAME": "demo", "S2S_PASSWORD": "sentinel-pass-7d1e", "S2S_SOURCE_ID": "1"}
    result = run(["push", "examples/products.csv", "--log-level", "DEBUG"], workdir, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    seen = result.stdout + result.stderr
    seen += "".join(p.read_text(encoding="utf-8-sig") if p.suffix != ".xlsx" else _workbook_text(p)
                    for p in (workdir / "reports").iterdir())
    assert "token=***" in seen  # the DEBUG request lines were logged, redacted
    assert not TOKEN_SHAPED.findall(seen)
    assert "sentinel-pass-7d1e" not in seen


def _workbook_text(path: Path) -> str:
    import openpyxl

    return " ".join(str(c.value) for row in openpyxl.load_workbook(path).active.iter_rows() for c in row)


@pytest.mark.parametrize("command", ["push", "check", "watch", "status", "show", "sandbox"])
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


def test_main_leaves_logging_and_signal_handlers_as_it_found_them(run, workdir):
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    sigterm, sigint = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    assert run(["check", "examples/products.csv", "--out", "out", "--log-level", "DEBUG"], workdir).returncode == 0
    assert run(["status"], workdir).returncode == 0
    assert root.handlers == handlers and root.level == level
    assert signal.getsignal(signal.SIGTERM) is sigterm and signal.getsignal(signal.SIGINT) is sigint


def test_the_installed_entry_point_runs(workdir):
    """Smoke test of the console script (or `python -m connector` where it is not installed)."""
    script = Path(sys.executable).with_name("connector")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "connector"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("S2S_")}
    result = subprocess.run([*command, "check", "examples/products.csv", "--out", "out"], cwd=workdir, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (workdir / "out" / "products.csv.items.json").exists() and "products" in result.stdout


def test_the_same_file_again_says_already_pushed_and_full_sends_every_item_again(run, make_sandbox, workdir):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    env = {"S2S_API_URL": sb.url, "S2S_USERNAME": "demo", "S2S_PASSWORD": "demo", "S2S_SOURCE_ID": "1"}
    first = run(["push", "examples/products.csv"], workdir, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    queued = len(sb.state()["queue"])

    again = run(["push", "examples/products.csv"], workdir, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert re.search(r"^products\.csv: already pushed on \d{4}-\d\d-\d\dT[\d:]+Z: nothing to send "
                     r"\(push --full sends every item again\)$", again.stdout, re.M)
    # the earlier figures are shown as that push's, never as what happened now
    assert not re.search(r"^products\.csv: done", again.stdout, re.M)
    assert re.search(r"^  that push \(.+\): done", again.stdout, re.M)
    assert len(sb.state()["queue"]) == queued  # nothing went
    report = json.loads((workdir / "reports" / "products.csv.report.json").read_text())
    assert report["already_pushed"]["finished_at"] and "nothing was sent now" in report["already_pushed"]["note"]

    full = run(["push", "examples/products.csv", "--full"], workdir, env=env)
    assert full.returncode == 0, full.stdout + full.stderr
    assert "already pushed" not in full.stdout and "products.csv: done" in full.stdout
    new = sb.state()["queue"][queued:]
    assert sum(e["kind"] == "product" for e in new) == 9  # every item of the file again
    assert sum(e["kind"] == "image" for e in new) == 4
