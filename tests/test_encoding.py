"""encoding.py and the reader: which encoding a CSV is read in, decided on the whole file.

Fixtures are written here in the encoding under test; the Akeneo corpus file (damaged UTF-8)
is in test_read.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.config import load_settings
from connector.encoding import DEFAULT_LEGACY, choose_encoding, legacy_candidates
from connector.pipeline import plan_file
from connector.read import read_table

FRENCH = [
    "Crème brûlée à la vanille", "Café noir torréfié, très doux", "Fenêtre en chêne massif",
    "Pâte à tartiner aux noisettes", "Théière en fonte émaillée", "Boîte de chocolats de Noël",
    "Sèche-cheveux ionique, garantie 2 ans", "Lave-linge à chargement frontal", "Façade en acier brossé",
    "Étagère murale, pin naturel", "Cuillère à café en inox", "Mélangeur à main, 600 W",
]


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def warnings(table) -> list[str]:
    return [p.reason for p in table.problems if p.severity == "warning"]


def errors(table) -> list:
    return [p for p in table.problems if p.severity == "error"]


# --------------------------------------------------------------------------- Mac Roman ("CSV (Macintosh)")


def mac_export(end: str) -> tuple[str, list[list[str]]]:
    """A "CSV (Macintosh)" export: quoted descriptions with bare CRs in them, records ending in `end`.

    Three descriptions hold byte pairs that happen to be valid UTF-8 in Mac Roman: "—à" is
    D1 88 (U+0448), "“é" is D2 8E (U+048E); two of them on lines with no other accent.
    """
    rows = []
    for i in range(60):
        title = FRENCH[i % len(FRENCH)]
        description = f"{title}.\rLivré monté.\rRéf. {i}"
        rows.append([f"{i:05d}", title, description, f"{i},50"])
    rows[7][2] = "Prix —à partir de 5 unités"
    rows[19][1:3] = ["Bulk pack", "Quantity pricing —à 10"]  # only the accidental pair on this record
    rows[33][2] = "Coloris “écru”"
    rows[41][1:3] = ["Mug —à tea", "Stoneware"]  # and here
    lines = ["sku;title;description;price"]
    for row in rows:
        lines.append(";".join(f'"{cell}"' for cell in row))
    return end.join(lines) + end, rows


@pytest.mark.parametrize("end", ["\r", "\r\n"], ids=["cr-records", "crlf-records"])
def test_mac_roman_export_with_accidental_utf8_pairs_is_read_as_mac_roman(tmp_path, end):
    text, rows = mac_export(end)
    data = text.encode("mac_roman")
    assert b"\xd1\x88" in data and b"\xd2\x8e" in data  # the pairs are there, and are valid UTF-8
    table = read_table(write(tmp_path, "mac.csv", data))
    assert table.encoding == "mac_roman"
    assert table.problems == []  # no row refused, and no doubt about it
    assert [list(r.cells.values()) for r in table.rows] == rows  # bare CRs kept in the values
    assert table.rows[0].cells["description"] == "Crème brûlée à la vanille.\rLivré monté.\rRéf. 0"
    assert "mac_roman" in (table.encoding_reason or "") and "not UTF-8" in (table.encoding_reason or "")
    # row numbers count records, whatever the CRs inside the descriptions (3 lines each)
    assert [r.row_number for r in table.rows[:3]] == [2, 3, 4]
    if end == "\r":
        assert [r.line for r in table.rows[:3]] == [2, 5, 8]


def test_mac_roman_export_end_to_end_keeps_every_row(tmp_path):
    text, _ = mac_export("\r")
    path = write(tmp_path, "mac.csv", text.encode("mac_roman"))
    (tmp_path / "m.yaml").write_text(
        "group_by: sku\nproduct: {title: title, body_html: description}\n"
        "variant: {source_variant_code: sku, sku: sku, price: {column: price, type: decimal}}\n"
        "source: {decimal: ','}\n")
    settings = load_settings(None, {})
    settings.api.source_id = 1
    plan = plan_file(path, settings, mapping=str(tmp_path / "m.yaml"))
    assert plan.rejected == []
    assert len(plan.products) == 60
    first = plan.products[0].items[0]
    assert first["product"]["title"] == "Crème brûlée à la vanille"
    assert plan.fill(_report()).to_json()["read"]["encoding"] == "mac_roman"


def _report():
    from connector.report import Report

    return Report(file="mac.csv")


# --------------------------------------------------------------------------- cp1252 and cp1250


def test_cp1252_file_is_read_as_cp1252_not_its_neighbours(tmp_path):
    # £ ½ ¼ ¾ read as Ł ˝ Ľ ľ in cp1250 and as other symbols in Mac Roman: they tell the three apart
    titles = [f"{t} – £{i},99 – {['½', '¼', '¾'][i % 3]} kg – œuvre™" for i, t in enumerate(FRENCH)]
    text = "sku;title\r\n" + "".join(f"{i:05d};{t}\r\n" for i, t in enumerate(titles))
    table = read_table(write(tmp_path, "w.csv", text.encode("cp1252")))
    assert table.encoding == "cp1252"
    assert table.problems == []
    assert [r.cells["title"] for r in table.rows] == titles


def test_cp1250_file_is_read_as_cp1250(tmp_path):
    titles = ["Zażółć gęślą jaźń", "Łóżko dwuosobowe, drewno sosnowe", "Ręcznik kąpielowy, bawełna",
              "Příliš žluťoučký kůň", "Dřevěná židle, ořech", "Síťový kabel, délka 5 m", "Čajová konvice",
              "Kuchyňský stůl z masivního dubu"]
    text = "sku;title\n" + "".join(f"{i:05d};{t}\n" for i, t in enumerate(titles))
    table = read_table(write(tmp_path, "pl.csv", text.encode("cp1250")))
    assert table.encoding == "cp1250"
    assert table.problems == []
    assert [r.cells["title"] for r in table.rows] == titles


def test_a_choice_made_on_thin_evidence_warns_and_says_how_to_name_the_encoding(tmp_path):
    # one accented letter: "Café" in Mac Roman reads "CafŽ" in cp1252, and nothing says which is meant
    table = read_table(write(tmp_path, "thin.csv", "sku;title\n1;Café\n2;Tea\n".encode("mac_roman")))
    assert table.encoding == "cp1252"  # the first candidate
    [warning] = warnings(table)
    assert "not certain" in warning
    assert "`source: {encoding: mac_roman}`" in warning
    assert errors(table) == []


def test_the_first_candidate_wins_a_tie(tmp_path):
    # French letters read the same in cp1252 and cp1250 (è/č, à/ŕ both letters): the order decides
    text = "sku;title\n" + "".join(f"{i};{t}\n" for i, t in enumerate(FRENCH))
    data = text.replace("è", "e").replace("à", "a").replace("â", "a").encode("cp1252")
    assert read_table(write(tmp_path, "a.csv", data)).encoding == "cp1252"
    assert read_table(write(tmp_path, "a.csv", data), legacy_encoding=["latin-1", "cp1252"]).encoding == "latin-1"


def test_utf8_with_a_few_broken_records_stays_utf8(tmp_path):
    lines = [f"{i};{t}" for i, t in enumerate(FRENCH)]
    data = ("sku;title\n" + "\n".join(lines) + "\n").encode()
    data = data.replace("Café".encode(), b"Caf\xe9")  # one record saved by a legacy editor
    table = read_table(write(tmp_path, "u.csv", data))
    assert table.encoding == "utf-8"
    assert [p.line for p in errors(table)] == [3]
    assert len(table.rows) == len(FRENCH) - 1
    assert warnings(table) == []


def test_a_single_legacy_encoding_is_used_without_detection():
    data = "sku;title\n1;Café\n".encode("mac_roman")
    choice, text = choose_encoding(data, ["mac_roman"])
    assert (choice.encoding, choice.uncertain) == ("mac_roman", False)
    assert text is not None and "Café" in text
    assert "legacy_encoding names mac_roman" in choice.reason


@pytest.mark.parametrize("value, expected", [
    (None, DEFAULT_LEGACY), ("cp1250", ("cp1250",)), (["mac_roman", "cp1252"], ("mac_roman", "cp1252")),
])
def test_legacy_candidates(value, expected):
    assert legacy_candidates(value) == expected


# --------------------------------------------------------------------------- connector.yaml -> the reader


@pytest.mark.parametrize("setting, expected", [
    ("legacy_encoding: mac_roman", "mac_roman"),
    ("legacy_encoding: [cp1250, cp1252]", "cp1250"),  # a tie: the list's order reached the reader
    ("", "cp1252"),
])
def test_legacy_encoding_from_connector_yaml_reaches_the_reader(tmp_path, setting, expected):
    config = tmp_path / "connector.yaml"
    config.write_text(f"api: {{source_id: 1}}\n{setting}\n")
    settings = load_settings(config, {})
    text = "sku;title\n" + "".join(f"{i};{t}\n" for i, t in enumerate(FRENCH))
    data = text.replace("è", "e").replace("à", "a").replace("â", "a").encode("cp1252")
    if expected == "mac_roman":  # the file: Mac Roman with pairs that happen to be UTF-8
        data = mac_export("\r")[0].encode("mac_roman")
    path = write(tmp_path, "export.csv", data)
    (tmp_path / "m.yaml").write_text("group_by: sku\nproduct: {title: title}\nvariant: {source_variant_code: sku, sku: sku}\n")
    plan = plan_file(path, settings, mapping=str(tmp_path / "m.yaml"))
    assert plan.table.encoding == expected
    assert plan.rejected == []


def test_a_mapping_names_the_encoding_of_its_files(tmp_path):
    config = tmp_path / "connector.yaml"
    config.write_text("api: {source_id: 1}\nlegacy_encoding: cp1252\n")
    settings = load_settings(config, {})
    path = write(tmp_path, "export.csv", "sku;title\n1;Café\n".encode("mac_roman"))
    (tmp_path / "m.yaml").write_text("group_by: sku\nproduct: {title: title}\nvariant: {source_variant_code: sku, sku: sku}\n"
                                     "source: {encoding: mac_roman}\n")
    plan = plan_file(path, settings, mapping=str(tmp_path / "m.yaml"))
    assert plan.products[0].items[0]["product"]["title"] == "Café"
    assert plan.table.encoding_reason == "named by source.encoding in the mapping"


def test_a_byte_order_mark_before_legacy_text_is_not_part_of_the_first_name(tmp_path):
    text = "sku;title\n" + "".join(f"{i};{t}\n" for i, t in enumerate(FRENCH))
    table = read_table(write(tmp_path, "bom.csv", b"\xef\xbb\xbf" + text.encode("cp1252")))
    assert table.encoding == "cp1252"
    assert table.header == ["sku", "title"]
    assert [r.cells["title"] for r in table.rows] == FRENCH
