"""The mapping language: cell types, loading, validation with every problem at once."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import jsonschema
import pytest
import yaml

from connector.cells import CELL_TYPES, TRANSFORMS, text_steps
from connector.mapping import (
    CellError,
    MappingError,
    bool_parser,
    decimal_parser,
    find_mapping,
    int_parser,
    json_schema,
    load_mapping,
    parse_code,
    parse_gtin,
    parse_mapping,
    parse_template,
    schema_text,
)
from connector.mapping import main as mapping_main

ROOT = Path(__file__).resolve().parents[1]
MAPPINGS = ROOT / "mappings"
SCHEMA = ROOT / "connector" / "schema" / "mapping.schema.json"

MINIMAL = {"group_by": "code", "variant": {"source_variant_code": "sku", "sku": "sku"}}


def problems_of(doc: dict) -> list[str]:
    with pytest.raises(MappingError) as caught:
        parse_mapping(doc)
    return caught.value.problems


# --------------------------------------------------------------------------- cell types


@pytest.mark.parametrize(
    "text, decimal, thousands, expected",
    [
        ("1299.50", ".", "", Decimal("1299.50")),
        ("-3", ".", "", Decimal("-3")),
        ("0.5", ".", "", Decimal("0.5")),
        (".5", ".", "", Decimal("0.5")),
        ("1,299.50", ".", ",", Decimal("1299.50")),
        ("1 299,50", ",", " ", Decimal("1299.50")),
        ("1\u00a0299,50", ",", " ", Decimal("1299.50")),  # NBSP counts as a space
        ("1\u202f299,50", ",", " ", Decimal("1299.50")),
        ("1.299,50", ",", ".", Decimal("1299.50")),
        ("12,5", ",", "", Decimal("12.5")),
        ("1'299.5", ".", "'", Decimal("1299.5")),
        ("1 234 567", ".", " ", Decimal("1234567")),
    ],
)
def test_decimal_reads_the_mappings_separators(text, decimal, thousands, expected):
    assert decimal_parser(decimal, thousands)(text) == expected


@pytest.mark.parametrize(
    "text, decimal, thousands, says",
    [
        ("1,299", ".", "", "ambiguous"),  # a lone comma is never guessed
        ("1.299", ",", "", "ambiguous"),
        ("1.299", ",", " ", "ambiguous"),
        ("12,5O", ",", "", "not a number"),
        ("1,29", ".", ",", "not a number"),  # thousands groups are 3 digits
        ("1 299,50", ",", "", "not a number"),
        ("1.2.3", ".", "", "not a number"),
        ("abc", ".", "", "not a number"),
        ("", ".", "", "not a number"),
        ("-", ".", "", "not a number"),
        ("6.00988E+12", ".", "", "scientific"),
        ("1,5", ".", ",", "not a number"),
    ],
)
def test_decimal_refuses_what_it_cannot_read_for_sure(text, decimal, thousands, says):
    with pytest.raises(CellError) as caught:
        decimal_parser(decimal, thousands)(text)
    assert says in caught.value.reason


def test_decimal_error_names_the_separator():
    with pytest.raises(CellError) as caught:
        decimal_parser(",", "")("12,5O")
    assert caught.value.reason == 'is not a number (decimal separator ",")'


@pytest.mark.parametrize("text, decimal, expected", [("479", ".", 479), ("479.0", ".", 479), ("479,0", ",", 479), ("-2", ".", -2), ("1 000", ",", None)])
def test_int_accepts_whole_numbers_written_as_decimals(text, decimal, expected):
    parse = int_parser(decimal, " " if expected is None else "")
    assert parse(text) == (1000 if expected is None else expected)


@pytest.mark.parametrize("text", ["4.5", "0.01", "x", "1,000"])
def test_int_refuses_fractions_and_text(text):
    with pytest.raises(CellError):
        int_parser(".", "")(text)


@pytest.mark.parametrize(
    "text, expected",
    [("true", True), ("TRUE", True), ("Yes", True), ("y", True), ("1", True), ("t", True),
     ("false", False), ("No", False), ("N", False), ("0", False), ("F", False)],
)
def test_bool_default_spellings(text, expected):
    assert bool_parser()(text) is expected


@pytest.mark.parametrize("text", ["maybe", "2", "on", "ja"])
def test_bool_refuses_unlisted_spellings(text):
    with pytest.raises(CellError) as caught:
        bool_parser()(text)
    assert "true, yes" in caught.value.reason


def test_bool_spellings_can_be_overridden():
    parse = bool_parser(("Ja",), ("Nee",))
    assert (parse("ja"), parse("NEE")) == (True, False)
    with pytest.raises(CellError):
        parse("yes")


@pytest.mark.parametrize("text", ["00123", "ABC-01", "219E01BE", "1.50", "NA"])
def test_code_is_kept_verbatim(text):
    assert parse_code(text) == text


@pytest.mark.parametrize("text", ["6.00988E+12", "6,00988E+12", "1E+5", "6.00988e+12"])
def test_code_in_scientific_notation_is_an_error(text):
    with pytest.raises(CellError) as caught:
        parse_code(text)
    assert "scientific notation" in caught.value.reason


@pytest.mark.parametrize("text", ["6001234567899", "96385074", "036000291452", "10614141000415", "4006381333931"])
def test_gtin_accepts_valid_barcodes(text):
    assert parse_gtin(text) == text


@pytest.mark.parametrize(
    "text, says",
    [
        ("6001234567891", "check digit"),
        ("600123456789", "check digit"),
        ("12345", "5 digits"),
        ("60012345678A0", "digits only"),
        ("6.00988E+12", "scientific"),
        ("６００１２３４５６７８９０", "digits only"),  # full-width digits are not ASCII digits
    ],
)
def test_gtin_refuses_bad_barcodes(text, says):
    with pytest.raises(CellError) as caught:
        parse_gtin(text)
    assert says in caught.value.reason


@pytest.mark.parametrize(
    "text, columns",
    [("{Brand} {Name}", ("Brand", "Name")), ("{sku}-{n}.jpg", ("sku", "n")), ("{{literal}} {A}", ("A",)), ("{ Stock Code }", ("Stock Code",))],
)
def test_template_names_its_columns(text, columns):
    assert parse_template(text).columns == columns


@pytest.mark.parametrize("text", ["{Brand", "Brand}", "{}", "no columns"])
def test_template_refuses_broken_braces(text):
    with pytest.raises(ValueError):
        parse_template(text)


# --------------------------------------------------------------------------- loading


def test_find_mapping_by_name_and_by_path(tmp_path):
    (tmp_path / "pastel.yaml").write_text("x: 1")
    assert find_mapping("pastel", [tmp_path]) == tmp_path / "pastel.yaml"
    assert find_mapping(str(tmp_path / "pastel.yaml"), []) == tmp_path / "pastel.yaml"


def test_find_mapping_lists_the_known_names_when_missing(tmp_path):
    (tmp_path / "pastel.yaml").write_text("x: 1")
    with pytest.raises(MappingError) as caught:
        find_mapping("sage", [tmp_path])
    assert "pastel" in caught.value.problems[0]


def test_load_mapping_records_name_hash_and_read_options(tmp_path):
    path = tmp_path / "erp.yaml"
    text = yaml.safe_dump({**MINIMAL, "source": {"decimal": ",", "thousands": " ", "header_row": 3, "sheet": "Stock", "delimiter": ";"}})
    path.write_text(text)
    mapping = load_mapping(path)
    import hashlib

    assert mapping.name == "erp"
    assert mapping.sha256 == hashlib.sha256(text.encode()).hexdigest()
    src = mapping.source
    assert (src.decimal, src.thousands, src.header_row, src.sheet, src.delimiter, src.encoding) == (",", " ", 3, "Stock", ";", None)


def test_unsafe_yaml_tag_is_refused(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("group_by: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(MappingError) as caught:
        load_mapping(path)
    assert "tags" in caught.value.problems[0]


def test_broken_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("group_by: code\nvariant: {sku: [\n")
    with pytest.raises(MappingError) as caught:
        load_mapping(path)
    assert "line" in caught.value.problems[0]


# --------------------------------------------------------------------------- validation


def test_every_problem_is_reported_at_once_with_its_path():
    found = problems_of(
        {
            "group_by": "code",
            "prodcut": {"title": "Name"},
            "source": {"delimter": ";", "decimal": "x"},
            "variant": {
                "source_variant_code": "sku",
                "sku": {"column": "sku", "type": "decmal"},
                "price": {"column": "p", "type": "bool"},
                "qty_availability": {"columns": "^qty_(?P<w>.+$"},
            },
            "skip_rows": [{"column": "a", "matches": "("}],
        }
    )
    text = "\n".join(found)
    assert 'prodcut: unknown key; did you mean "product"?' in text
    assert 'source.delimter: unknown key; did you mean "delimiter"?' in text
    assert "source.decimal:" in text
    assert 'variant.sku.type: unknown type "decmal"; did you mean "decimal"? (valid choices: text, code, gtin, decimal, int, bool, date)' in text
    assert "variant.price.type:" in text and "(valid choices: decimal, int)" in text
    assert "variant.qty_availability.columns:" in text
    assert "skip_rows[0].matches:" in text
    assert len(found) == 7


@pytest.mark.parametrize(
    "change, where",
    [
        ({"group_by": None}, "group_by"),
        ({"variant": {"sku": "sku"}}, "variant.source_variant_code"),
        ({"variant": {"source_variant_code": "a", "sku": "a", "price": {"column": "p", "default": "abc"}}}, "variant.price.default"),
        ({"variant": {"source_variant_code": "a", "sku": "a", "grams": {"column": "g", "type": "text", "multiply": 1000}}}, "variant.grams"),
        ({"variant": {"source_variant_code": "a", "sku": {"column": "a", "value": "b"}}}, "variant.sku"),
        ({"variant": {"source_variant_code": "a", "sku": {"column": "a", "zero_pad": 0}}}, "variant.sku.zero_pad"),
        ({"active": {"column": "S", "active": ["A"], "delete": ["a"]}}, "active.delete"),
        ({"active": {"column": "S", "default": "maybe"}}, "active.default"),
        ({"active": {"column": "S", "active": [True]}}, "active.active"),
        ({"images": {"columns": ["img"], "folder": "../elsewhere"}}, "images.folder"),
        ({"images": {"separator": ","}}, "images"),
        ({"options": [{"name": "Size"}]}, "options[0]"),
        ({"options": [{"name": "Size", "value": {"colum": "S"}}]}, "options[0].value.colum"),
        ({"source": {"thousands": ".", "decimal": "."}}, "source.thousands"),
        ({"source": {"encoding": "klingon"}}, "source.encoding"),
        ({"source": {"header_row": 0}}, "source.header_row"),
        ({"missing_columns": "explode"}, "missing_columns"),
        ({"skip_rows": [{"column": "a", "matches": "x", "equals": "y"}]}, "skip_rows[0]"),
        ({"product": {"title": {"template": "{Brand"}}}, "product.title.template"),
        ({"product": {"tags": {"column": "t", "split": ""}}}, "product.tags.split"),
        ({"variant": {"source_variant_code": "a", "sku": "a", "inventory_management": {"column": "i", "true_values": ["J"], "type": "text"}}}, "variant.inventory_management.type"),
    ],
)
def test_each_mistake_is_named_by_its_path(change, where):
    doc = {**MINIMAL, **change}
    doc = {k: v for k, v in doc.items() if v is not None}
    found = problems_of(doc)
    assert any(p.startswith(f"{where}:") for p in found), found


def test_message_of_the_error_names_the_file(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("group_by: code\nvariant: {source_variant_code: a, sku: a, prise: p}\n")
    with pytest.raises(MappingError) as caught:
        load_mapping(path)
    assert "typo.yaml" in str(caught.value) and 'did you mean "price"' in str(caught.value)


def test_a_valid_mapping_compiles_every_part():
    mapping = parse_mapping(
        {
            **MINIMAL,
            "active": {"column": "Status", "active": ["A"], "delete": ["D"], "ignore": ["I"]},
            "product": {"title": {"template": "{Brand} {Name}"}, "meta": {"columns": "^meta_(?P<key>.+)$"}},
            "options": [{"name": "Size", "value": "Size"}],
            "images": {"pattern": ["{sku}.jpg", "{sku}-{n}.jpg"], "max": 3, "folder": "pics", "allow_urls": True},
        }
    )
    assert mapping.images_folder == "pics" and mapping.allow_urls is True
    assert mapping.options[0].name.value == "Size" and mapping.options[0].value.column == "Size"
    assert dict(mapping.active.values) == {"a": "active", "d": "delete", "i": "ignore"}


# --------------------------------------------------------------------------- shipped mappings


def shipped() -> list[Path]:
    return sorted(MAPPINGS.glob("*.yaml"))


def test_the_default_mapping_is_shipped():
    assert (MAPPINGS / "stock2shop.yaml").is_file()


@pytest.mark.parametrize("path", shipped(), ids=lambda p: p.name)
def test_every_shipped_mapping_loads_and_matches_the_schema(path):
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(yaml.safe_load(path.read_text()))
    assert load_mapping(path).name


@pytest.mark.parametrize(
    "doc",
    [
        {"group_by": "code"},  # no variant
        {**MINIMAL, "prodcut": {}},
        {**MINIMAL, "variant": {"source_variant_code": "a", "sku": {"column": "a", "type": "decmal"}}},
        {**MINIMAL, "source": {"decimal": ";"}},
    ],
)
def test_schema_and_loader_agree_on_mistakes(doc):
    schema = json.loads(SCHEMA.read_text())
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(doc))
    assert problems_of(doc)


def test_the_complete_example_in_the_docs_loads():
    text = (ROOT / "docs" / "mapping.md").read_text()
    example = text.split("## A complete example", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator(schema).validate(yaml.safe_load(example))
    mapping = parse_mapping(yaml.safe_load(example))
    assert mapping.source.decimal == "," and mapping.name == "pastel"


# --------------------------------------------------------------------------- the language grown for real exports


@pytest.mark.parametrize(
    "extra, says",
    [
        ({"parents": {"rows": {"column": "t", "equals": "v"}, "key": "sku"}}, "parents: needs exactly one of children_by"),
        ({"parents": {"key": "sku", "children_by": "p"}}, "parents.rows: is required"),
        ({"parents": {"rows": {"column": "t", "equals": "v"}, "key": "sku", "children_by": "p", "chidren": 1}}, 'parents.chidren: unknown key'),
        ({"parents": {"rows": {"column": "t", "equals": "v"}, "key": "sku", "children_in": {"column": "c", "pick": {"kye": "sku"}}}},
         "parents.children_in.pick: must be {key: name}"),
        ({"product": {"title": {"column": "t", "pick": {"index": 0}}}}, "product.title.pick.index: 0 must be a position"),
        ({"product": {"title": {"column": "t", "pick": {"key": "a", "index": 1}}}}, "product.title.pick: must be {key: name}"),
        ({"product": {"title": {"column": "t", "fallback": {"colum": "u"}}}}, 'product.title.fallback.colum: unknown key'),
        ({"fill_down": "Title"}, None),
        ({"fill_down": [True]}, "fill_down: must be a list of column names"),
        ({"same_variant": "add"}, 'same_variant: "add" is not allowed (valid choices: error, sum)'),
        ({"images": {"columns": ["i"], "strip_leading_slash": "yes"}}, "images.strip_leading_slash: must be true or false"),
    ],
)
def test_new_keys_are_validated_with_their_yaml_path(extra, says):
    if says is None:
        assert parse_mapping({**MINIMAL, **extra}).fill_down == ("Title",)
        return
    problems = problems_of({**MINIMAL, **extra})
    assert any(says in p for p in problems), problems


def test_new_keys_are_in_the_schema():
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    good = {**MINIMAL, "fill_down": ["Title"], "same_variant": "sum",
            "parents": {"rows": {"column": "t", "equals": "v"}, "key": "sku", "children_in": {"column": "c", "pick": {"key": "sku"}}},
            "product": {"title": {"column": "t", "fallback": "u", "pick": [{"index": -1, "separator": "/"}]}}}
    assert list(validator.iter_errors(good)) == []
    assert parse_mapping(good).parents.children_in == "c"
    bad = {**MINIMAL, "same_variant": "add"}
    assert list(validator.iter_errors(bad)) and problems_of(bad)


# --------------------------------------------------------------------------- units, image-only rows, long numbers

GRAMS = {"column": "weight", "type": "decimal", "round": 0}


def with_grams(**grams) -> dict:
    return {**MINIMAL, "variant": {**MINIMAL["variant"], "grams": {**GRAMS, **grams}}}


@pytest.mark.parametrize(
    "doc, says",
    [
        (with_grams(unit={"column": "weight-unit", "factors": {"GRAM": 1, "KILOGRAM": 1000}, "default": "gram"}), None),
        (with_grams(unit={"column": "weight-unit"}), "variant.grams.unit: must be {column: <the unit's column>, factors:"),
        (with_grams(unit={"column": "u", "factors": {"GRAM": 0}}), "variant.grams.unit.factors.GRAM: 0 must be a number above 0"),
        (with_grams(unit={"column": "u", "factors": {"GRAM": "x"}}), "variant.grams.unit.factors.GRAM: 'x' must be a number above 0"),
        (with_grams(unit={"column": "u", "factors": {"GRAM": 1, "gram": 1}}), 'variant.grams.unit.factors.gram: "gram" is listed twice'),
        (with_grams(unit={"column": "u", "factors": {}}), "variant.grams.unit.factors: must be a table of unit: factor"),
        (with_grams(unit={"column": "u", "factors": {"GRAM": 1}, "default": "KG"}), 'variant.grams.unit.default: "KG" is not one of the units (valid choices: GRAM)'),
        (with_grams(unit={"column": "u", "factors": {"GRAM": 1}, "unti": 1}), "variant.grams.unit.unti: unknown key"),
        ({**MINIMAL, "product": {"title": {"column": "t", "unit": {"column": "u", "factors": {"G": 1}}}}},
         'product.title.unit: needs type decimal or int (this field is "text")'),
        (with_grams(multiply=float("inf")), "variant.grams.multiply: inf is not a finite number"),  # YAML .inf
        ({**MINIMAL, "skip_rows": [{"column": "p", "blank": True, "keep_images": "yes"}]}, "skip_rows[0].keep_images: must be true or false"),
        ({**MINIMAL, "parents": {"rows": {"column": "t", "equals": "v", "keep_images": True}, "key": "sku", "children_by": "p"}},
         "parents.rows.keep_images: only applies to skip_rows"),
        ({**MINIMAL, "variant": {**MINIMAL["variant"], "price": {"column": "p", "type": "decimal", "round": 2, "default": "1" * 30}}},
         'variant.price.default: "111111111111111111111111111111" is not a number that can be sent'),
    ],
)
def test_units_and_keep_images_are_validated_with_their_yaml_path(doc, says):
    if says is None:
        unit = dict(parse_mapping(doc).variant)["grams"].unit
        assert unit.column == "weight-unit" and unit.factors == (("GRAM", Decimal(1)), ("KILOGRAM", Decimal(1000)))
        return
    problems = problems_of(doc)
    assert any(says in p for p in problems), problems


def test_units_and_keep_images_are_in_the_schema():
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    good = {**with_grams(unit={"column": "weight-unit", "factors": {"GRAM": 1, "KILOGRAM": 1000}, "default": "GRAM"}),
            "skip_rows": [{"column": "Variant Price", "blank": True, "keep_images": True}]}
    assert list(validator.iter_errors(good)) == [] and parse_mapping(good).skip_rows[0].keep_images
    for bad in (with_grams(unit={"column": "u", "factors": {"GRAM": 0}}),
                {**MINIMAL, "parents": {"rows": {"column": "t", "equals": "v", "keep_images": True}, "key": "sku", "children_by": "p"}}):
        assert list(validator.iter_errors(bad)) and problems_of(bad)


@pytest.mark.parametrize(
    "parse, text",
    [(int_parser(), "9" * 5000), (int_parser(), "9" * 41), (decimal_parser(), "1" * 41), (decimal_parser(",", "."), "1." * 30)],
)
def test_numbers_longer_than_40_characters_are_refused(parse, text):
    with pytest.raises(CellError, match=r"is too long for a number \(\d+ characters; at most 40\)"):
        parse(text)


@pytest.mark.parametrize("path", shipped(), ids=lambda p: p.name)
def test_system_presets_report_missing_columns_and_stock2shop_says_why_it_does_not(path):
    mapping = load_mapping(path)
    if path.stem != "stock2shop":
        assert mapping.missing_columns == "warn"
        return
    assert mapping.missing_columns == "ignore"
    header = path.read_text().split("missing_columns:", 1)[0]
    assert "a menu, not a fixed export" in header  # the documented reason sits right above it


# --------------------------------------------------------------------------- one definition: registry, schema, docs


def test_the_committed_schema_is_the_one_the_definition_generates():
    assert SCHEMA.read_text(encoding="utf-8") == schema_text(json_schema()), (
        "connector/schema/mapping.schema.json differs from the definition in connector/mapping.py: "
        "run `python -m connector.mapping --schema` and commit the result"
    )


def test_schema_check_command_agrees(tmp_path, capsys):
    assert mapping_main(["--check"]) == 0
    stale = tmp_path / "mapping.schema.json"
    stale.write_text("{}\n")
    assert mapping_main(["--check", "--out", str(stale)]) == 1
    assert "python -m connector.mapping --schema" in capsys.readouterr().err


def test_every_type_and_transform_is_in_the_schema_and_the_docs():
    schema = json.loads(SCHEMA.read_text())
    field = schema["$defs"]["FieldDoc"]["properties"]
    docs = (ROOT / "docs" / "mapping.md").read_text()
    assert field["type"]["enum"] == list(CELL_TYPES)
    for name, transform in TRANSFORMS.items():
        assert field[name]["description"] == transform.description
        assert f"`{name}`" in docs, f"docs/mapping.md does not describe the transform {name}"
    for name in CELL_TYPES:
        assert f"| `{name}` |" in docs, f"docs/mapping.md does not describe the type {name}"


def test_transforms_run_in_the_registry_order_whatever_the_yaml_order():
    mapping = parse_mapping({**MINIMAL, "product": {"title": {"column": "t", "suffix": "!", "upper": True, "replace": {"pattern": "a", "with": "b"}}}})
    spec = dict(mapping.product)["title"]
    assert [name for name, _ in spec.transforms] == ["replace", "upper", "suffix"]
    assert text_steps(spec.transforms)("banana") == "BBNBNB!"


@pytest.mark.parametrize(
    "extra, says",
    [
        ({"missing_columns": "ignor"}, 'missing_columns: "ignor" is not allowed; did you mean "ignore"? (valid choices: warn, ignore, error)'),
        ({"active": {"column": "S", "default": "delet"}}, 'active.default: "delet" is not allowed; did you mean "delete"?'),
        ({"source": {"delimiter": ":"}}, 'source.delimiter: ":" is not allowed (valid choices: ",", ";", "\\t", "|")'),
        ({"product": {"title": {"column": "t", "upper": "yes"}}}, "product.title.upper: must be true or false"),
        ({"variant": {**MINIMAL["variant"], "qty": {"column": "q", "split": ","}}}, "variant.qty.split: only text fields can use split"),
    ],
)
def test_choices_and_flags_are_checked_from_the_definition(extra, says):
    assert any(says in p for p in problems_of({**MINIMAL, **extra}))


def test_the_docs_list_the_transforms_in_the_order_they_run():
    section = (ROOT / "docs" / "mapping.md").read_text().split("### Transforms", 1)[1].split("###", 1)[0]
    listed = [n for pair in re.findall(r"^\| `([a-z_]+)`(?: / `([a-z_]+)`)? \|", section, re.MULTILINE) for n in pair if n]
    assert [n for n in listed if n in TRANSFORMS] == list(TRANSFORMS)
