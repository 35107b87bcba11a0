"""Images: decode safely, orient, fit to the model's patch grid, and cut into patch vectors.

A MODEL1 image of rows x cols patches costs 2 + rows * (cols + 1) tokens: <|image|>, per row
cols <|patch|> and one <|row|>, then <|/image|>.
"""

from __future__ import annotations

import math
import struct
import warnings
from pathlib import Path

import numpy as np
import xxhash
from PIL import Image, ImageOps, UnidentifiedImageError

from strata.errors import IngestError

# What Pillow raises on broken files (truncated, random bytes, bad headers).
_PIL_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, UnidentifiedImageError)


def fit_grid(width: int, height: int, patch: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(rows, cols) of patches closest to the image's aspect within the pixel budgets."""
    area = patch * patch
    rows, cols = max(1, round(height / patch)), max(1, round(width / patch))
    if rows * cols * area > max_pixels:
        beta = math.sqrt(width * height / max_pixels)
        rows = max(1, math.floor(height / beta / patch))
        cols = max(1, math.floor(width / beta / patch))
    elif rows * cols * area < min_pixels:
        beta = math.sqrt(min_pixels / (width * height))
        rows, cols = math.ceil(height * beta / patch), math.ceil(width * beta / patch)
    max_patches = max(1, max_pixels // area)
    cols = min(cols, max(1, max_patches // rows))  # extreme aspect ratios
    rows = min(rows, max(1, max_patches // cols))
    return rows, cols


def run_length(grid: tuple[int, int]) -> int:
    """Tokens of one image run with this grid."""
    rows, cols = grid
    return 2 + rows * (cols + 1)


def open_image(path: Path, max_source_pixels: int, hint: tuple[int, int] | None = None) -> Image.Image:
    """Decode the first frame as RGB, EXIF-oriented; refuse pixel bombs before decoding."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            width, height = img.size
            if width * height > max_source_pixels:
                raise IngestError(
                    f"decompression bomb guard: {width}x{height} = "
                    f"{width * height / 1e6:.0f} Mpx > {max_source_pixels / 1e6:.0f} Mpx"
                )
            if hint is not None and img.format == "JPEG":
                img.draft("RGB", hint)  # decode a JPEG at a reduced scale: much less work
            img.seek(0)  # GIF / TIFF: the first frame
            img.load()
            return to_rgb(ImageOps.exif_transpose(img))
    except IngestError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise IngestError(f"decompression bomb guard: {exc}") from exc
    except _PIL_ERRORS as exc:
        raise IngestError(f"cannot decode image: {exc}") from exc


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB, with transparency composited on white (screenshots often have alpha)."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        # Pillow clips these to 0..255 on convert: a 16-bit scan would come out white.
        values = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16"):
            scaled = values / 257.0
        else:
            lo, hi = float(values.min()), float(values.max())
            scaled = (values - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(values)
        return Image.fromarray(np.clip(scaled + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    return img.convert("RGB")


def fit_pixels(img: Image.Image, patch: int, min_pixels: int, max_pixels: int) -> np.ndarray:
    """Resize to the patch grid: uint8 [rows*patch, cols*patch, 3]."""
    rows, cols = fit_grid(img.width, img.height, patch, min_pixels, max_pixels)
    size = (cols * patch, rows * patch)
    if img.size != size:
        img = img.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    return np.asarray(img, dtype=np.uint8)


def shrink(pixels: np.ndarray, patch: int, min_pixels: int, max_pixels: int) -> np.ndarray:
    """A smaller grid of already fitted pixels (the reduced level of an image)."""
    img = Image.fromarray(pixels)
    return fit_pixels(img, patch, min_pixels, max_pixels)


def patchify(pixels: np.ndarray, patch: int) -> np.ndarray:
    """float32 [rows*cols, patch*patch*3] in (py, px, channel) order, scaled to [-1, 1]."""
    h, w, c = pixels.shape
    rows, cols = h // patch, w // patch
    blocks = pixels.reshape(rows, patch, cols, patch, c).transpose(0, 2, 1, 3, 4)
    flat = blocks.reshape(rows * cols, patch * patch * c).astype(np.float32)
    return flat * np.float32(1 / 127.5) - np.float32(1.0)


def media_hash(patches: np.ndarray, grid: tuple[int, int]) -> bytes:
    """16-byte xxh3_128 of the normalised patch bytes plus the grid shape."""
    h = xxhash.xxh3_128()
    h.update(np.asarray(grid, dtype="<u4").tobytes())
    h.update(np.ascontiguousarray(patches, dtype="<f4").tobytes())
    return h.digest()
