"""Generate the sample material used by the ingest tests and the README demo.

    python samples/make_samples.py [OUT_DIR]     (default: the samples/ folder itself)

Deterministic: the same script writes the same files (no randomness), byte for byte except
the CreationDate / ID that PDFium stamps into the PDF. Total size stays well under 1 MB.
"""

from __future__ import annotations

import ctypes
import io
import sys
from pathlib import Path

import av
import numpy as np
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from PIL import Image, ImageDraw

REPO_FILES = {
    "README.md": "# tinyshop\n\nA tiny shop backend: a Python API, a JS client and a Go worker.\n\n"
    "Run `python app.py` and open http://localhost:8000/items.\n",
    ".gitignore": "*.log\nbuild/\n",
    "debug.log": "this file is ignored by .gitignore\n",
    "app.py": '''"""HTTP API of the shop."""

from dataclasses import dataclass


@dataclass
class Item:
    """One thing for sale."""

    name: str
    price_cents: int


def total(items: list[Item]) -> int:
    """Sum of the prices, in cents."""
    return sum(item.price_cents for item in items)


def apply_discount(cents: int, percent: int) -> int:
    """A discount rounded down to the cent."""
    if not 0 <= percent <= 100:
        raise ValueError("percent must be within 0..100")
    return cents * (100 - percent) // 100
''',
    "client/cart.js": """// Shopping cart kept in the browser.
export class Cart {
  constructor() {
    this.items = [];
  }

  /** Add an item; quantities merge by name. */
  add(name, priceCents, qty = 1) {
    const found = this.items.find((i) => i.name === name);
    if (found) found.qty += qty;
    else this.items.push({ name, priceCents, qty });
  }

  total() {
    return this.items.reduce((s, i) => s + i.priceCents * i.qty, 0);
  }
}
""",
    "worker/main.go": """package main

import "fmt"

// Order is a paid cart waiting to be shipped.
type Order struct {
	ID    int
	Cents int
}

// Ship marks an order as shipped and returns a label.
func Ship(o Order) string {
	return fmt.Sprintf("order-%d", o.ID)
}

func main() {
	fmt.Println(Ship(Order{ID: 7, Cents: 1999}))
}
""",
    "package-lock.json": '{\n  "name": "tinyshop",\n  "lockfileVersion": 3\n}\n',
    "client/vendor.min.js": "var a=1;" * 400 + "\n",
}


def make_repo(out: Path) -> None:
    for rel, text in REPO_FILES.items():
        path = out / "repo" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (out / "repo" / "logo.bin").write_bytes(bytes(range(256)) * 4)


def _add_text(doc: pdfium.PdfDocument, page: pdfium.PdfPage, lines: list[str]) -> None:
    y = 760.0
    for line in lines:
        obj = pdfium_c.FPDFPageObj_NewTextObj(doc.raw, b"Helvetica", ctypes.c_float(12.0))
        buf = ctypes.create_string_buffer((line + "\0").encode("utf-16-le"))
        pdfium_c.FPDFText_SetText(obj, ctypes.cast(buf, ctypes.POINTER(ctypes.c_ushort)))
        pdfium_c.FPDFPageObj_Transform(obj, 1, 0, 0, 1, 72, y)
        pdfium_c.FPDFPage_InsertObject(page.raw, obj)
        y -= 18
    page.gen_content()


def _chart() -> Image.Image:
    img = Image.new("RGB", (480, 360), "white")
    draw = ImageDraw.Draw(img)
    for i, h in enumerate([120, 200, 90, 260, 170]):
        draw.rectangle([40 + i * 85, 320 - h, 100 + i * 85, 320], fill=(40 + i * 40, 90, 200 - i * 30))
    draw.line([30, 320, 460, 320], fill="black", width=3)
    draw.text((40, 20), "Quarterly sales (scanned figure)", fill="black")
    return img


def make_pdf(out: Path) -> None:
    doc = pdfium.PdfDocument.new()
    pages = [
        [
            "Tinyshop quarterly report",
            "",
            "Page one: revenue grew 12 percent over the quarter.",
            "The Go worker shipped 1,204 orders; the median cart held 3 items.",
        ],
        [
            "Page two: risks",
            "",
            "Refund rate rose to 2.1 percent after the price change.",
            "Discounts above 40 percent are now refused by apply_discount.",
        ],
    ]
    for lines in pages:
        page = doc.new_page(612, 792)
        _add_text(doc, page, lines)
    page = doc.new_page(612, 792)  # an image-only page: no text layer at all
    image = pdfium.PdfImage.new(doc)
    image.set_bitmap(pdfium.PdfBitmap.from_pil(_chart()))
    image.set_matrix(pdfium.PdfMatrix().scale(480, 360).translate(66, 300))
    page.insert_obj(image)
    page.gen_content()
    path = out / "docs" / "report.pdf"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc.save(str(path))


def _screenshot() -> Image.Image:
    img = Image.new("RGBA", (320, 200), (245, 245, 245, 255))
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, 320, 24], fill=(50, 90, 160, 255))
    draw.text((8, 6), "tinyshop - checkout", fill="white")
    draw.text((16, 50), "Total: 19.99 EUR", fill="black")
    draw.rectangle([16, 140, 120, 170], fill=(30, 160, 60, 255))
    draw.text((30, 150), "Pay now", fill="white")
    return img


def make_images(out: Path) -> None:
    d = out / "images"
    d.mkdir(parents=True, exist_ok=True)
    _screenshot().save(d / "checkout.png", optimize=True)
    photo = Image.new("RGB", (120, 80), "white")  # landscape pixels, stored rotated
    ImageDraw.Draw(photo).rectangle([0, 0, 40, 80], fill="red")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display -> shows as 80x120 portrait
    photo.save(d / "phone_photo.jpg", quality=80, exif=exif)
    frames = [Image.new("P", (64, 64), i * 40) for i in range(3)]
    frames[0].save(d / "spinner.gif", save_all=True, append_images=frames[1:], duration=100)
    _chart().resize((240, 180)).save(d / "chart.webp", quality=70)
    _chart().convert("L").resize((200, 150)).save(d / "scan.tiff", compression="tiff_deflate")


def make_video(out: Path, seconds: float = 3.0, fps: int = 10) -> None:
    d = out / "video"
    d.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        stream.options = {"qscale": "8"}
        for i in range(int(seconds * fps)):
            img = Image.new("RGB", (160, 96), (20, 20, 40))
            draw = ImageDraw.Draw(img)
            x = int(i * 130 / (seconds * fps))
            draw.rectangle([x, 40, x + 30, 70], fill=(220, 60, 60))
            draw.text((4, 4), f"t={i / fps:.1f}s", fill="white")
            frame = av.VideoFrame.from_ndarray(np.asarray(img), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    (d / "demo.mp4").write_bytes(buf.getvalue())


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path(__file__).resolve().parent
    make_repo(out)
    make_pdf(out)
    make_images(out)
    make_video(out)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"samples written to {out} ({total / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
