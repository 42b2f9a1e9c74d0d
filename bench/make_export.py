"""Generate a realistic ERP export in the Stock2Shop console CSV convention, as CSV and XLSX.

    python bench/make_export.py OUTDIR [--rows 100000]

Each product has 4 variants (a unique Size x Colour per product); codes keep leading zeros,
barcodes are valid EAN-13, prices have 2 decimals. Seeded, so every run writes the same data.
In the XLSX, codes and barcodes are text cells and prices/quantities are number cells, as an
ERP's Excel export would have them.
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

COLUMNS = [
    "source_product_code", "source_variant_code", "title", "body_html", "vendor",
    "product_type", "collection", "tags", "sku", "barcode", "price", "qty", "grams",
    "inventory_management", "active", "option1_name", "option1_value", "option2_name",
    "option2_value", "price_wholesale", "price_retail", "qty_jhb", "qty_cpt", "meta_brand",
    "image1",
]
VARIANTS_PER_PRODUCT = 4
# Columns written as numbers in the XLSX (everything else is a text cell).
NUMBER_COLUMNS = {"price", "qty", "grams", "price_wholesale", "price_retail", "qty_jhb", "qty_cpt"}

SIZES = ["S", "M", "L", "XL", "XXL"]
COLOURS = ["Black", "White", "Navy", "Red", "Grey", "Olive"]
VENDORS = ["Cape Outdoor", "Karoo Kids", "Highveld Wear", "Umhlanga Surf", "Tafelberg & Co"]
TYPES = ["T-Shirt", "Hoodie", "Cap", "Jacket", "Shorts", "Socks"]
ADJECTIVES = ["Classic", "Everyday", "Trail", "Coastal", "Urban", "Heritage", "Lightweight"]


def ean13(first12: str) -> str:
    """Append the EAN-13 check digit to 12 digits: ean13("600123456789") -> "6001234567893"."""
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(first12))
    return first12 + str((10 - total % 10) % 10)


def generate_rows(rows: int, seed: int = 42) -> list[list[object]]:
    """Return `rows` data rows (lists in COLUMNS order); prices/quantities are numbers."""
    rng = random.Random(seed)
    out: list[list[object]] = []
    product = 0
    while len(out) < rows:
        product += 1
        code = f"{product:07d}"  # leading zeros, as ERP codes often have
        vendor = rng.choice(VENDORS)
        ptype = rng.choice(TYPES)
        title = f"{rng.choice(ADJECTIVES)} {ptype} {product}"
        body = f"<p>{title} by {vendor}, made for South African weather.</p>"
        tags = f"{ptype.lower()},{vendor.split()[0].lower()},new"
        base = round(rng.uniform(49, 1999), 2)
        combos = rng.sample([(s, c) for s in SIZES for c in COLOURS], VARIANTS_PER_PRODUCT)
        for n, (size, colour) in enumerate(combos, start=1):
            if len(out) == rows:
                break
            sku = f"{code}-{n:02d}"
            price = round(base + (n - 1) * 10, 2)
            jhb, cpt = rng.randint(0, 500), rng.randint(0, 200)
            out.append([
                code, sku, title, body, vendor, ptype, ptype + "s", tags, sku,
                ean13("600" + f"{product * 10 + n:09d}"), price, jhb + cpt,
                rng.randint(80, 2500), "true", "true", "Size", size, "Colour", colour,
                round(price * 0.6, 2), price, jhb, cpt, vendor, f"{sku}.jpg",
            ])
    return out


def _csv_text(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def write_csv(path: Path, data: list[list[object]]) -> None:
    """Write the rows as UTF-8 CSV with the header line, prices with 2 decimals."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows([_csv_text(v) for v in row] for row in data)


def write_xlsx(path: Path, data: list[list[object]]) -> None:
    """Write the rows as XLSX (openpyxl write-only): codes as text, numbers as numbers."""
    from openpyxl import Workbook  # only the generator needs openpyxl

    wb = Workbook(write_only=True)
    ws = wb.create_sheet("Products")
    ws.append(COLUMNS)
    for row in data:
        ws.append(row)
    wb.save(path)


def make_export(outdir: Path | str, rows: int = 100_000) -> tuple[Path, Path]:
    """Write export.csv and export.xlsx with `rows` data rows into outdir; return their paths."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    data = generate_rows(rows)
    csv_path, xlsx_path = outdir / "export.csv", outdir / "export.xlsx"
    write_csv(csv_path, data)
    write_xlsx(xlsx_path, data)
    return csv_path, xlsx_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args(argv)
    for path in make_export(args.outdir, args.rows):
        print(path)


if __name__ == "__main__":
    main()
