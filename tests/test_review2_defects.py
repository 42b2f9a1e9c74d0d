"""Defects found by reviewing main from the outside (review 2): each test fails while its defect is
there (xfail strict) and passes once it is fixed. They drive the real parts: the `connector` CLI
in its own process, real CSV/XLSX files, the sandbox over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from connector.sandbox import Faults
from tests.support import run_cli, workbook


def connector(*args: str, cwd: Path, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """`connector ARGS` in its own process, as a person runs it."""
    return subprocess.run([sys.executable, "-m", "connector", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def items_of(out: Path, name: str) -> list[dict]:
    return json.loads((out / f"{name}.items.json").read_text(encoding="utf-8"))["system_products"]


def test_all_sheets_match_column_names_loosely_on_each_sheet(tmp_path):
    book = workbook(tmp_path / "stock.xlsx", {
        "Stock": [["Code", "Title", "Price"], ["X1", "One", 1.5]],
        "More": [["CODE", "title", "price"], ["Y1", "Four", 3]],
    })
    mapping = write(tmp_path / "m.yaml", """
        source: {sheet: "*"}
        group_by: Code
        product: {title: Title}
        variant: {source_variant_code: Code, sku: Code, price: Price}
    """)
    done = connector("check", str(book), "--mapping", str(mapping), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    codes = sorted(p["source"]["source_product_code"] for p in items_of(tmp_path / "out", "stock.xlsx"))
    assert codes == ["X1", "Y1"], done.stdout


def test_a_price_too_large_to_send_is_refused_naming_the_cell(tmp_path):
    big = "1" * 30
    export = write(tmp_path / "prices.csv", f"""
        Code,Title,Price
        P1,Kettle,{big}
        P2,Mug,12.50
    """)
    mapping = write(tmp_path / "m.yaml", """
        group_by: Code
        product: {title: Title}
        variant: {source_variant_code: Code, sku: Code, price: Price}
    """)
    out = tmp_path / "out"
    done = connector("check", str(export), "--mapping", str(mapping), "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [p["source"]["source_product_code"] for p in items_of(out, "prices.csv")] == ["P2"], done.stdout
    problems = json.loads((out / "prices.csv.report.json").read_text(encoding="utf-8"))["problems"]
    assert [(p["line"], p["column"], p["value"]) for p in problems] == [(2, "Price", big)]
    assert f'price "{big}" is not a number that can be sent' in problems[0]["reason"]


@pytest.fixture
def run(monkeypatch, capsys):
    """`run(args, cwd, env)`: `connector ARGS` in-process (fake clock for the client's pacing)."""
    return lambda args, cwd, env=None: run_cli(monkeypatch, capsys, args, cwd, env)


def test_a_catalogue_the_queue_lost_whole_can_be_sent_again_from_what_verify_says(run, make_sandbox, tmp_path):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0, faults=Faults(queue_fail_rate=1.0))  # one channel, an admin
    env = {"S2S_API_URL": sb.url, "S2S_USERNAME": "demo", "S2S_PASSWORD": "demo", "S2S_SOURCE_ID": "1"}
    write(tmp_path / "n.csv", """
        source_product_code,source_variant_code,title,sku,price
        N1,N1-A,Net,N1-A,4.00
        N2,N2-A,Nail,N2-A,5.00
    """)
    assert run(["push", "n.csv"], tmp_path, env).returncode == 0
    assert [q["status"] for q in sb.state()["queue"]] == ["failed", "failed"]  # acknowledged, then lost
    queued = len(sb.state()["queue"])

    repaired = run(["verify", "--repair"], tmp_path, env)
    said = repaired.stdout + repaired.stderr
    # either the repair sends them again, or what it says names the way to (push --full)
    assert len(sb.state()["queue"]) > queued or "--full" in said, said


def test_a_column_named_twice_that_the_mapping_does_not_read_does_not_refuse_the_file(tmp_path):
    export = write(tmp_path / "stock.csv", """
        Code,Title,Price,Notes,Notes
        A1,Kettle,10.00,front,back
        A2,Mug,4.50,,
    """)
    mapping = write(tmp_path / "m.yaml", """
        group_by: Code
        product: {title: Title}
        variant: {source_variant_code: Code, sku: Code, price: Price}
    """)
    out = tmp_path / "out"
    done = connector("check", str(export), "--mapping", str(mapping), "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [p["source"]["source_product_code"] for p in items_of(out, "stock.csv")] == ["A1", "A2"]


def test_the_rejected_rows_name_the_column_of_a_refused_cell_in_a_file_without_a_header(tmp_path):
    export = write(tmp_path / "supplier.csv", """
        A1,Kettle,10.00,3
        A2,Mug,4.50,4.5
    """)
    mapping = write(tmp_path / "m.yaml", """
        source: {header: none}
        group_by: 1
        product: {title: 2}
        variant: {source_variant_code: 1, sku: 1, price: 3, qty: 4}
    """)
    out = tmp_path / "out"
    connector("check", str(export), "--mapping", str(mapping), "--out", str(out), cwd=tmp_path)
    rejected = (out / "supplier.csv.rejected.csv").read_text(encoding="utf-8-sig").splitlines()
    assert len(rejected) == 1 and rejected[0].startswith("A2,"), rejected
    assert rejected[0].endswith('"4: qty ""4.5"" is not a whole number"'), rejected[0]


AKENEO_MODELS = """
    group_by: code
    models: {parent: parent}
    product: {title: {column: name, fallback: code}}
    variant: {source_variant_code: code, sku: code}
"""
AKENEO_PRODUCTS = """
    group_by: {column: parent, fallback: sku}
    join: {model: parent}
    product: {title: name}
    variant: {source_variant_code: sku, sku: sku, price: {column: price, type: decimal}}
    options:
      - {name: {value: Size}, value: size}
"""


def test_products_fixed_after_their_models_came_are_sent_under_those_models(run, make_sandbox, tmp_path):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    env = {"S2S_API_URL": sb.url, "S2S_USERNAME": "demo", "S2S_PASSWORD": "demo", "S2S_SOURCE_ID": "1"}
    write(tmp_path / "models.yaml", AKENEO_MODELS)
    write(tmp_path / "products.yaml", AKENEO_PRODUCTS)
    write(tmp_path / "product_models.csv", """
        code;parent;name
        tshirt;;T-shirt
        tshirt-red;tshirt;
        tshirt-blue;tshirt;
    """)
    clash = "sku;parent;name;size;price\nS1;tshirt-red;;S;10\nS2;tshirt-red;;S;11\nS3;tshirt-blue;;M;12\n"
    (tmp_path / "products.csv").write_text(clash, encoding="utf-8")
    assert run(["push", "products.csv", "--mapping", "products.yaml"], tmp_path, env).returncode == 0  # they wait
    run(["push", "product_models.csv", "--mapping", "models.yaml"], tmp_path, env)
    said = (tmp_path / "reports" / "product_models.csv.report.json").read_text(encoding="utf-8")
    assert "line 3 of products.csv: repeats the options of line 2 of products.csv" in said  # the clash, named

    (tmp_path / "products.csv").write_text(clash.replace("S2;tshirt-red;;S;", "S2;tshirt-red;;L;"), encoding="utf-8")
    fixed = run(["push", "products.csv", "--mapping", "products.yaml"], tmp_path, env)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "waiting" not in fixed.stdout, fixed.stdout  # its models came already
    assert sorted(p["source_product_code"] for p in sb.state()["products"]) == ["tshirt"]


def test_a_short_page_token_is_refused_with_the_command_to_make_one_intact(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("S2S_")}
    env["S2S_HTTP_TOKEN"] = "secret"
    done = connector("status", cwd=tmp_path, env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "watch.http_token" in done.stderr and "at least 16 characters" in done.stderr, done.stderr
    assert 'python -c "import secrets; print(secrets.token_urlsafe(24))"' in done.stderr, done.stderr


def test_two_options_of_one_name_hold_the_product_back(tmp_path):
    export = write(tmp_path / "shirts.csv", """
        Code,Variant,Title,Name 1,Value 1,Name 2,Value 2
        P,P-1,Shirt,Size,S,Size,M
        P,P-2,Shirt,Size,L,Size,XL
        Q,Q-1,Cap,Size,S,Colour,Red
    """)
    mapping = write(tmp_path / "m.yaml", """
        group_by: Code
        product: {title: Title}
        variant: {source_variant_code: Variant, sku: Variant}
        options:
          - {name: {column: Name 1}, value: Value 1}
          - {name: {column: Name 2}, value: Value 2}
    """)
    out = tmp_path / "out"
    connector("check", str(export), "--mapping", str(mapping), "--out", str(out), cwd=tmp_path)
    assert [p["source"]["source_product_code"] for p in items_of(out, "shirts.csv")] == ["Q"]
    problems = json.loads((out / "shirts.csv.report.json").read_text(encoding="utf-8"))["problems"]
    assert any(p["product"] == "P" and p["kind"] == "options" and "Size" in p["reason"] for p in problems), problems


def test_a_field_with_a_fallback_and_a_default_tries_the_fallback_before_the_default(tmp_path):
    export = write(tmp_path / "items.csv", """
        Code,Name,ERP Name
        F1,,Kettle from the ERP
        F2,Mug,
        F3,,
    """)
    mapping = write(tmp_path / "m.yaml", """
        group_by: Code
        product:
          title: {column: Name, fallback: ERP Name, default: Untitled}
        variant: {source_variant_code: Code, sku: Code}
    """)
    out = tmp_path / "out"
    done = connector("check", str(export), "--mapping", str(mapping), "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    titles = [p["product"]["title"] for p in items_of(out, "items.csv")]
    assert titles == ["Kettle from the ERP", "Mug", "Untitled"]
