"""Writes the example export the README's quick start pushes: examples/products.csv,
the same rows as examples/products.xlsx, and the product photos in examples/images/.

The export follows Stock2Shop's console CSV convention (mappings/stock2shop.yaml): a
clothing and homeware wholesaler with variants, two price lists, two warehouses, photos,
a product to delete and a few rows an ERP really produces by mistake:

  BOOTS-HIKE   a price typed with a letter O ("12,5O"): the whole product is held back
  GLOVES-WNTR  two variants with the same size and colour: held back
  CABLE-USB    a barcode Excel turned into 6.00988E+12: held back
  photo-broken.jpg   a photo cut off mid-file: reported, its product still goes

Run: python examples/make_examples.py   (needs Pillow and openpyxl)
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

HERE = Path(__file__).resolve().parent

HEADER = [
    "source_product_code", "source_variant_code", "title", "body_html", "vendor", "product_type",
    "collection", "tags", "sku", "barcode", "price", "qty", "grams", "inventory_management", "active",
    "option1_name", "option1_value", "option2_name", "option2_value",
    "price_wholesale", "price_retail", "qty_jhb", "qty_cpt", "meta_brand", "image1", "image2",
]


def gtin13(body12: str) -> str:
    """A 13-digit barcode with its check digit."""
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body12))
    return body12 + str((10 - total % 10) % 10)


def rows() -> list[list[str]]:
    out = []
    tee = "<p>Heavyweight cotton tee, pre-shrunk.</p>"
    n = 0
    for colour in ("Black", "White"):
        for size in ("S", "M", "L"):
            n += 1
            code = f"TEE-{colour[:3].upper()}-{size}"
            out.append(["TEE-CLASSIC", code, "Classic Cotton Tee", tee, "Kalahari Apparel", "T-Shirts",
                        "Summer", "cotton,basics", code, gtin13(f"600123400{n:03d}"), "189.00", str(10 * n),
                        "220", "true", "true", "Colour", colour, "Size", size,
                        "139.00", "189.00", str(6 * n), str(4 * n), "Kalahari", f"tee-{colour.lower()}.jpg",
                        "tee-back.jpg"])
    out.append(["00471", "00471", "Enamel Camp Mug 350ml", "<p>Enamel on steel.</p>", "Veld Outdoor", "Kitchen",
                "Camping", "enamel,mug", "00471", gtin13("600123401001"), "79.95", "240", "310", "true", "true",
                "", "", "", "", "55.00", "79.95", "200", "40", "Veld", "mug.jpg", ""])
    out.append(["KETTLE-2L", "KETTLE-2L", "Stainless Kettle 2 L", "<p>Whistling kettle.</p>", "Veld Outdoor", "Kitchen",
                "Camping", "kettle", "KETTLE-2L", gtin13("600123401002"), "1299.50", "12", "1100", "true", "true",
                "", "", "", "", "999.00", "1299.50", "7", "5", "Veld", "photo-broken.jpg", ""])
    for size in ("8", "9"):
        out.append(["BOOTS-HIKE", f"BOOTS-HIKE-{size}", "Trail Hiking Boot", "<p>Waterproof leather.</p>",
                    "Veld Outdoor", "Footwear", "Winter", "boots", f"BOOTS-HIKE-{size}", gtin13(f"60012340200{size}"),
                    "12,5O" if size == "9" else "1499.00", "5", "1400", "true", "true",
                    "Size", size, "", "", "1100.00", "1499.00", "3", "2", "Veld", "", ""])
    for code in ("GLOVES-WNTR-M", "GLOVES-WNTR-M2"):
        out.append(["GLOVES-WNTR", code, "Fleece Gloves", "", "Kalahari Apparel", "Accessories", "Winter", "gloves",
                    code, "", "149.00", "30", "90", "true", "true", "Size", "M", "", "", "99.00", "149.00", "20", "10",
                    "Kalahari", "", ""])
    out.append(["CABLE-USB", "CABLE-USB", "USB-C Cable 1 m", "", "Volt", "Electronics", "", "cable", "CABLE-USB",
                "6.00988E+12", "99.00", "80", "40", "true", "true", "", "", "", "", "70.00", "99.00", "50", "30",
                "Volt", "", ""])
    out.append(["OLD-LANTERN", "OLD-LANTERN", "Paraffin Lantern", "", "Veld Outdoor", "Camping", "", "", "OLD-LANTERN",
                "", "", "", "", "", "false", "", "", "", "", "", "", "", "", "", "", ""])
    return out


def write_csv(path: Path) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(HEADER)
    writer.writerows(rows())
    path.write_text(buf.getvalue(), encoding="utf-8", newline="")


def write_xlsx(path: Path) -> None:
    from openpyxl import Workbook

    numeric = {"price", "qty", "grams", "price_wholesale", "price_retail", "qty_jhb", "qty_cpt"}
    wb = Workbook()
    ws = wb.active
    ws.title = "Products"
    ws.append(HEADER)
    for row in rows():
        cells = []
        for name, value in zip(HEADER, row, strict=True):  # every row has a cell per column
            try:
                cells.append(float(value) if name in numeric and value else value)
            except ValueError:
                cells.append(value)  # a typo stays text, as the ERP wrote it
        ws.append(cells)
    for column in ws.iter_cols(min_row=2):
        for cell in column:
            if isinstance(cell.value, str):
                cell.number_format = "@"  # codes with leading zeros are text cells
    wb.save(path)


def write_images(folder: Path) -> None:
    from PIL import Image, ImageDraw

    folder.mkdir(exist_ok=True)
    colours = {"tee-black.jpg": (30, 30, 30), "tee-white.jpg": (235, 235, 230), "tee-back.jpg": (120, 120, 120),
               "mug.jpg": (200, 60, 40)}
    for name, colour in colours.items():
        img = Image.new("RGB", (480, 480), colour)
        ImageDraw.Draw(img).rectangle((120, 120, 360, 360), outline=(250, 200, 0), width=12)
        img.save(folder / name, "JPEG", quality=80)
    whole = io.BytesIO()
    Image.new("RGB", (480, 480), (20, 120, 200)).save(whole, "JPEG", quality=80)
    (folder / "photo-broken.jpg").write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])


if __name__ == "__main__":
    write_csv(HERE / "products.csv")
    write_xlsx(HERE / "products.xlsx")
    write_images(HERE / "images")
    print(f"wrote {HERE / 'products.csv'}, {HERE / 'products.xlsx'} and {HERE / 'images'}/")
