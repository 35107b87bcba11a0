"""Items for images, PDFs and videos: extraction through the cache, then levels for the packer.

Pixels are cached after fitting to the largest grid (uint8, four times smaller than patches);
smaller levels are cheap resizes of those pixels. Text-only targets get placeholder lines.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from ingest.cache import ExtractCache, make_key
from ingest.images import fit_grid, fit_pixels, open_image, shrink
from ingest.items import Item, Level, Piece, PieceBuilder, attr, omitted
from ingest.options import IngestOptions
from ingest.prompt import INCLUDED, OUTLINED, PATH_ONLY
from ingest.target import Target

NO_VISION = "image omitted: model has no vision input"
REDUCED_SHARE = 4  # the reduced level keeps a quarter of the pixels


class MediaExtractor:
    """Turns media files into Items, consulting the extraction cache first."""

    def __init__(self, target: Target, opts: IngestOptions, cache: ExtractCache, stats: dict[str, int]) -> None:
        self.target, self.opts, self.cache, self.stats = target, opts, cache, stats

    def _cached(self, kind: str, digest: str, params: tuple, compute) -> tuple[dict, dict]:
        key = make_key(kind, self.target.fingerprint, digest, *params)
        hit = self.cache.get(key)
        if hit is not None:
            self.stats["cache_hits"] = self.stats.get("cache_hits", 0) + 1
            return hit
        arrays, meta = compute()
        self.stats["parsed"] = self.stats.get("parsed", 0) + 1
        self.cache.put(key, arrays, meta)
        return arrays, meta

    def _geometry(self, max_px: int | None = None) -> tuple[int, int, int]:
        t = self.target
        return t.patch_size or 16, t.min_image_pixels, max_px or t.max_image_pixels

    # -- images -------------------------------------------------------------------------
    def image(self, path: str, file: Path, digest: str, order: tuple) -> Item:
        """Levels: full grid, reduced grid, path only (or a placeholder for text-only models)."""
        if not self.target.vision:
            return Item(
                path,
                "image",
                [Level(PATH_ONLY, NO_VISION, lambda: omitted(self.target, "image", path, NO_VISION, "image"))],
                order,
            )
        geo = self._geometry()

        def compute() -> tuple[dict, dict]:
            hint = fit_grid(1 << 14, 1 << 14, geo[0], geo[1], geo[2])  # upper bound for JPEG draft
            img = open_image(file, self.opts.max_source_pixels, (hint[1] * geo[0], hint[0] * geo[0]))
            return {"pixels": fit_pixels(img, *geo)}, {"size": list(img.size)}

        arrays, meta = self._cached("image", digest, (self.opts.max_source_pixels,), compute)
        pixels = arrays["pixels"]
        return Item(path, "image", self._image_levels(path, pixels, meta), order)

    def _image_levels(self, path: str, pixels: np.ndarray, meta: dict) -> list[Level]:
        p, lo, hi = self._geometry()
        small_px = max(lo, pixels.shape[0] * pixels.shape[1] // REDUCED_SHARE)
        small_grid = fit_grid(pixels.shape[1], pixels.shape[0], p, lo, small_px)
        full_grid = (pixels.shape[0] // p, pixels.shape[1] // p)
        w, h = meta["size"]
        levels = [
            Level(
                INCLUDED,
                f"{w}x{h} as {full_grid[0]}x{full_grid[1]} patches",
                lambda: self._image_piece(path, pixels),
            )
        ]
        if small_grid != full_grid:
            levels.append(
                Level(
                    INCLUDED,
                    f"{w}x{h} downscaled to {small_grid[0]}x{small_grid[1]} patches for the budget",
                    lambda: self._image_piece(path, shrink(pixels, p, lo, small_px)),
                )
            )
        levels.append(Level(PATH_ONLY, "over budget", lambda: omitted(self.target, "image", path, "budget", "image")))
        return levels

    def _image_piece(self, path: str, pixels: np.ndarray) -> Piece:
        b = PieceBuilder(self.target)
        b.text(f'<image path="{attr(path)}">\n', "image", path)
        b.image(pixels, "image", path)
        b.text("\n</image>\n", "image", path)
        return b.build()

    # -- PDFs ---------------------------------------------------------------------------
    def pdf(self, path: str, file: Path, digest: str, order: tuple) -> tuple[Item, list[str]]:
        """Levels: text + page images, text + smaller images, text only, path only."""
        vision = self.target.vision
        geo = self._geometry()

        def compute() -> tuple[dict, dict]:
            from ingest.pdf import extract_pdf  # pypdfium2 loads only when a PDF shows up

            ext = extract_pdf(file, self.opts, geo[0] if vision else None, geo[1], geo[2])
            arrays = {f"page{pg.number}": pg.pixels for pg in ext.pages if pg.pixels is not None}
            pages = [[pg.number, pg.text, pg.reason] for pg in ext.pages]
            return arrays, {"pages": pages, "count": ext.page_count, "warnings": ext.warnings}

        arrays, meta = self._cached(
            "pdf",
            digest,
            (vision, self.opts.pdf_min_text_chars, self.opts.pdf_max_pages, self.opts.pdf_render_dpi),
            compute,
        )
        pages = meta["pages"]
        rendered = [n for n, _, reason in pages if reason]
        note = f"{len(pages)} pages" + (f", {len(rendered)} rendered as images" if rendered else "")
        levels = [Level(INCLUDED, note, lambda: self._pdf_piece(path, meta, arrays, 1))]
        if rendered and vision:
            levels.append(
                Level(
                    INCLUDED,
                    note + " (downscaled for the budget)",
                    lambda: self._pdf_piece(path, meta, arrays, REDUCED_SHARE),
                )
            )
            levels.append(
                Level(
                    OUTLINED,
                    f"{len(pages)} pages, text only: page images over budget",
                    lambda: self._pdf_piece(path, meta, arrays, 0),
                )
            )
        elif rendered:
            levels[0].reason = f"{len(pages)} pages; {len(rendered)} page images omitted: model has no vision input"
        levels.append(Level(PATH_ONLY, "over budget", lambda: omitted(self.target, "pdf", path, "budget", "pdf")))
        return Item(path, "pdf", levels, order), [f"{path}: {w}" for w in meta["warnings"]]

    def _pdf_piece(self, path: str, meta: dict, arrays: dict, share: int) -> Piece:
        """share: 1 full images, N keep 1/N of the pixels, 0 no images."""
        b = PieceBuilder(self.target)
        p, lo, _ = self._geometry()
        b.text(f'<pdf path="{attr(path)}" pages="{meta["count"]}">\n', "pdf", path)
        for number, text, reason in meta["pages"]:
            b.text(f'<page n="{number}">\n' + (text + "\n" if text else ""), "pdf", path, page=number)
            pixels = arrays.get(f"page{number}")
            if pixels is not None and share:
                if share > 1:
                    pixels = shrink(pixels, p, lo, max(lo, pixels.shape[0] * pixels.shape[1] // share))
                b.image(pixels, "pdf_page", path, page=number)
                b.text("\n", "pdf", path, page=number)
            elif reason:
                why = "no vision input" if not self.target.vision else "budget"
                b.text(f"[page image omitted ({reason}): {why}]\n", "pdf", path, page=number)
            b.text("</page>\n", "pdf", path, page=number)
        b.text("</pdf>\n", "pdf", path)
        return b.build()

    # -- video --------------------------------------------------------------------------
    def video(self, path: str, file: Path, digest: str, order: tuple) -> tuple[Item, list[str]]:
        """Levels: all sampled frames, every 2nd, 4th, ... frame, path only."""
        if not self.target.video:
            reason = "video omitted: model has no vision input"
            return Item(
                path,
                "video",
                [Level(PATH_ONLY, reason, lambda: omitted(self.target, "video", path, reason, "video"))],
                order,
            ), []
        o = self.opts
        geo = self._geometry(min(o.video_max_pixels, self.target.max_image_pixels))

        def compute() -> tuple[dict, dict]:
            from ingest.video import extract_video  # PyAV loads only when a video shows up

            ext = extract_video(file, o, *geo)
            return (
                {"frames": np.stack(ext.frames), "times": np.asarray(ext.times)},
                {"duration": ext.duration, "warnings": ext.warnings},
            )

        params = (o.video_fps, o.video_max_frames, o.video_max_pixels, o.video_seek_gap_s)
        arrays, meta = self._cached("video", digest, params, compute)
        frames, times = arrays["frames"], arrays["times"].tolist()
        levels: list[Level] = []
        step = 1
        while step <= len(times):
            keep = list(range(0, len(times), step))
            status = INCLUDED if step == 1 else OUTLINED
            reason = f"{len(keep)} frames over {meta['duration']:.1f}s"
            reason += "" if step == 1 else f" (thinned from {len(times)} for the budget)"
            make = functools.partial(self._video_piece, path, meta, frames, times, keep)
            levels.append(Level(status, reason, make))
            step *= 2
        levels.append(Level(PATH_ONLY, "over budget", lambda: omitted(self.target, "video", path, "budget", "video")))
        return Item(path, "video", levels, order), [f"{path}: {w}" for w in meta["warnings"]]

    def _video_piece(self, path: str, meta: dict, frames: np.ndarray, times: list[float], keep: list[int]) -> Piece:
        t = self.target
        b = PieceBuilder(t)
        b.text(f'<video path="{attr(path)}" duration="{meta["duration"]:.2f}s">\n', "video", path)
        if t.qwen_vl:  # one video input: the model sees time through its positions, not text
            kept = [times[i] for i in keep]
            span = kept[-1] - kept[0]
            fps = (len(kept) - 1) / span if len(kept) > 1 and span > 0 else self.opts.video_fps
            b.vision_run(t.vision_processor().video(frames[keep], fps, resize=False), "video", path, times=kept)
            b.text("\n</video>\n", "video", path)
            return b.build()
        b.special(t.video_start_token_id)
        for i in keep:
            b.text(f"t={times[i]:.2f}s\n", "video", path, time_s=times[i])
            b.image(frames[i], "frame", path, time_s=times[i])
        b.special(t.video_end_token_id)
        b.text("\n</video>\n", "video", path)
        return b.build()
