"""Issue 11's acceptance end to end: files made here (and the corpus) pushed to the sandbox API
over real HTTP, every row accounted for in the report."""

from __future__ import annotations

import textwrap

from tests.support import pipeline_for, settings_for
from tests.test_encoding import mac_export


def test_a_mac_roman_export_reaches_the_sandbox_with_no_row_refused(make_sandbox, tmp_path):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    (tmp_path / "mappings").mkdir()
    (tmp_path / "mappings" / "mac.yaml").write_text(textwrap.dedent("""
        source: {decimal: ","}
        group_by: sku
        product: {title: title, body_html: description}
        variant: {source_variant_code: sku, sku: sku, price: {column: price, type: decimal}}
    """), encoding="utf-8")
    text, _ = mac_export("\r")
    export = tmp_path / "mac.csv"
    export.write_bytes(text.encode("mac_roman"))
    report = pipeline_for(tmp_path, sb, settings_for(tmp_path, sb)).run_file(export, mapping="mac")
    assert report.status == "done", report.message
    assert report.read.encoding == "mac_roman" and not report.rejected
    assert report.rows is not None and (report.rows.read, report.rows.items, report.rows.refused) == (60, 60, 0)
    stored = {p["variants"][0]["sku"]: p for p in sb.state()["products"]}
    assert len(stored) == 60 and report.counts.items_sent == 60
    assert stored["00000"]["title"] == "Crème brûlée à la vanille"
    assert stored["00000"]["body_html"] == "Crème brûlée à la vanille.\rLivré monté.\rRéf. 0"  # its line breaks kept
    assert stored["00019"]["body_html"] == "Quantity pricing —à 10"  # the accidental UTF-8 pair read as Mac Roman
