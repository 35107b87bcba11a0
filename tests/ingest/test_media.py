"""PDFs, images and video: extraction, patches, timestamps, and bad input as ledger entries."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from ingest import IngestOptions, build_prompt
from ingest.images import media_hash, patchify, run_length

from .helpers import SAMPLES, frame_red, png_bomb, random_bytes, video_bytes, write


def _entry(prompt, suffix: str):
    return next(i for i in prompt.ledger if i.path.endswith(suffix))


def test_pdf_text_pages_and_rendered_image_page(target, opts) -> None:
    p = build_prompt([SAMPLES / "docs" / "report.pdf"], target, options=opts)
    item = _entry(p, "report.pdf")
    assert item.status == "included" and "3 pages, 1 rendered" in item.reason
    text = target.tokenizer.decode(p.token_ids)
    assert '<page n="1">' in text and "revenue grew 12 percent" in text
    assert text.index("Page two: risks") > text.index('<page n="2">')
    assert len(p.media) == 1 and p.media[0].kind == "pdf_page"
    m = p.media[0]
    assert [s.page for s in p.cite(m.start, m.end)] == [3]
    needle = target.encode("Refund rate")
    at = next(i for i in range(len(p.token_ids)) if p.token_ids[i : i + len(needle)] == needle)
    assert p.cite(at, at + 1)[0].label() == "report.pdf p.2"
    # The rendered chart is mostly white with coloured bars: not a blank page.
    assert m.patches.min() < -0.5 and m.patches.max() > 0.9


def test_pdf_for_text_only_model(text_target, opts) -> None:
    p = build_prompt([SAMPLES / "docs" / "report.pdf"], text_target, options=opts)
    assert not p.media and "page images omitted" in _entry(p, "report.pdf").reason
    assert "no vision input" in text_target.tokenizer.decode(p.token_ids)


@pytest.mark.parametrize(
    "name,size",
    [
        ("checkout.png", (320, 200)),
        ("phone_photo.jpg", (80, 120)),
        ("chart.webp", (240, 180)),
        ("spinner.gif", (64, 64)),
        ("scan.tiff", (200, 150)),
    ],
)
def test_each_image_format(target, opts, name: str, size: tuple[int, int]) -> None:
    p = build_prompt([SAMPLES / "images" / name], target, options=opts)
    assert _entry(p, name).status == "included" and f"{size[0]}x{size[1]}" in _entry(p, name).reason
    (m,) = p.media
    rows, cols = m.grid
    assert m.patches.shape == (rows * cols, 16 * 16 * 3) and m.patches.dtype == np.float32
    assert m.length == run_length(m.grid)
    ids = p.token_ids[m.start : m.end]
    assert ids[0] == target.image_start_token_id and ids[-1] == target.image_end_token_id
    assert ids.count(target.image_patch_token_id) == rows * cols
    assert ids.count(target.image_row_token_id) == rows
    assert all(p.token_ids[i] == target.image_patch_token_id for i in m.patch_positions())
    assert abs(cols / rows - size[0] / size[1]) < 0.35  # aspect kept on the grid
    assert len(m.media_hash) == 16


def test_exif_orientation_is_applied(target, opts) -> None:
    p = build_prompt([SAMPLES / "images" / "phone_photo.jpg"], target, options=opts)
    (m,) = p.media
    rows, cols = m.grid
    assert rows > cols  # stored 120x80 landscape, displayed 80x120 portrait
    grid = m.patches.reshape(rows, cols, 16, 16, 3)
    top, bottom = grid[0].mean(axis=(0, 1, 2)), grid[-1].mean(axis=(0, 1, 2))
    assert top[0] > 0.8 and top[1] < -0.5  # the red bar moved from the left edge to the top
    assert bottom.min() > 0.8  # white


def test_patch_layout_and_hash() -> None:
    pixels = np.zeros((16, 32, 3), dtype=np.uint8)
    pixels[3, 20] = (255, 0, 127)  # row 3, column 20 -> patch 1, (py=3, px=4)
    patches = patchify(pixels, 16)
    assert patches.shape == (2, 768)
    vec = patches[1].reshape(16, 16, 3)
    assert np.allclose(vec[3, 4], [1.0, -1.0, 127 / 127.5 - 1], atol=1e-6)
    assert (patches[0] == -1).all()
    h = media_hash(patches, (1, 2))
    assert h == media_hash(patches.copy(), (1, 2))
    assert h != media_hash(patches, (2, 1))
    assert h != media_hash(patchify(pixels[:, ::-1].copy(), 16), (1, 2))


def test_large_image_fits_pixel_budget_and_reduced_level(tmp_path, target, opts) -> None:
    img = Image.radial_gradient("L").resize((1600, 900)).convert("RGB")
    img.save(tmp_path / "wide.png")
    p = build_prompt([tmp_path / "wide.png"], target, options=opts)
    (m,) = p.media
    assert m.grid[0] * m.grid[1] * 256 <= target.max_image_pixels
    small = build_prompt([tmp_path / "wide.png"], target, budget=len(p) - 10, options=opts)
    assert "downscaled" in _entry(small, "wide.png").reason and small.media[0].grid < m.grid
    tiny = build_prompt([tmp_path / "wide.png"], target, budget=40, options=opts)
    assert _entry(tiny, "wide.png").status == "path_only" and not tiny.media


def test_bad_media_are_ledger_errors_and_the_rest_goes_on(tmp_path, target, opts) -> None:
    root = tmp_path / "bad"
    write(root, "bomb.png", png_bomb(100_000, 100_000))
    write(root, "noise.png", random_bytes(4000, 1))
    write(root, "noise.pdf", random_bytes(4000, 2))
    write(root, "noise.mp4", random_bytes(4000, 3))
    pdf = (SAMPLES / "docs" / "report.pdf").read_bytes()
    write(root, "truncated.pdf", pdf[: len(pdf) // 2])
    jpg = (SAMPLES / "images" / "phone_photo.jpg").read_bytes()
    write(root, "truncated.jpg", jpg[: len(jpg) // 2])
    write(root, "ok.md", "still here\n")
    p = build_prompt([root], target, options=opts)
    reasons = {i.path.split("/")[-1]: (i.status, i.reason) for i in p.ledger}
    assert reasons["bomb.png"][0] == "error" and "decompression bomb" in reasons["bomb.png"][1]
    assert (
        reasons["noise.png"] == ("error", reasons["noise.png"][1]) and "cannot decode image" in reasons["noise.png"][1]
    )
    assert reasons["noise.pdf"][0] == "error" and "PDF" in reasons["noise.pdf"][1]
    assert reasons["noise.mp4"][0] == "error" and "video" in reasons["noise.mp4"][1]
    assert reasons["truncated.jpg"][0] == "error"
    assert reasons["truncated.pdf"][0] in ("error", "included")  # pdfium may recover the xref
    assert reasons["ok.md"][0] == "included"


def test_video_frames_with_timestamps(target, opts) -> None:
    p = build_prompt([SAMPLES / "video" / "demo.mp4"], target, options=opts)
    item = _entry(p, "demo.mp4")
    assert item.status == "included" and item.reason.startswith("3 frames over 3.0s")
    assert [m.kind for m in p.media] == ["frame"] * 3
    times = [p.cite(m.start, m.end)[0].time_s for m in p.media]
    assert times == pytest.approx([0.0, 1.0, 2.0], abs=0.11)
    text = target.tokenizer.decode(p.token_ids)
    assert "t=0.00s" in text and "t=1.00s" in text and "t=2.00s" in text
    assert p.token_ids.count(target.video_start_token_id) == 1
    assert p.token_ids.count(target.video_end_token_id) == 1
    assert p.cite(p.media[1].start, p.media[1].start + 1)[0].label() == "demo.mp4 @1.00s"
    assert len({m.media_hash for m in p.media}) == 3


def test_long_video_is_seeked_and_frames_match_their_time(tmp_path, target, opts) -> None:
    path = write(tmp_path, "long.mp4", video_bytes(seconds=20.0, fps=5, size=(64, 48)))
    opts.video_fps, opts.video_seek_gap_s = 0.25, 2.0
    p = build_prompt([path], target, options=opts)
    times = [p.cite(m.start, m.end)[0].time_s for m in p.media]
    assert times == pytest.approx([0.0, 4.0, 8.0, 12.0, 16.0], abs=0.21)
    for t, m in zip(times, p.media, strict=True):
        rows, cols = m.grid
        red = (m.patches.reshape(rows * cols, 256, 3)[..., 0].mean() + 1) * 127.5
        assert abs(red - frame_red(round(t * 5))) < 6, (t, red)  # 1 s apart = 12.5 levels
    # Seeking lands on exactly the frames a full sequential decode would pick.
    sequential = IngestOptions(video_fps=0.25, video_seek_gap_s=1000.0, use_cache=False)
    seq = build_prompt([path], target, options=sequential)
    assert [m.media_hash for m in seq.media] == [m.media_hash for m in p.media]
    opts.video_max_frames = 3  # over the frame budget: spread evenly over the duration
    p3 = build_prompt([path], target, options=opts)
    assert [s.time_s for s in p3.source_map if s.time_s is not None][::2] == pytest.approx([0.0, 6.6, 13.2], abs=0.3)


def test_damaged_videos(tmp_path, target, opts) -> None:
    mkv = video_bytes(fmt="matroska", seconds=6.0, fps=10)
    write(tmp_path / "v", "cut.mkv", mkv[: len(mkv) * 55 // 100])
    mp4 = bytearray((SAMPLES / "video" / "demo.mp4").read_bytes())
    mp4[len(mp4) // 3 : 2 * len(mp4) // 3] = random_bytes(2 * len(mp4) // 3 - len(mp4) // 3, 5)
    write(tmp_path / "v", "garbled.mp4", bytes(mp4))
    p = build_prompt([tmp_path / "v"], target, options=opts)
    cut = _entry(p, "cut.mkv")
    assert cut.status == "included" and 1 <= len([m for m in p.media if m.kind == "frame"])
    assert any("cut.mkv" in w and ("ended" in w or "damaged" in w) for w in p.warnings)
    garbled = _entry(p, "garbled.mp4")
    assert garbled.status == "error" or any("garbled.mp4" in w for w in p.warnings)


def test_video_thinned_under_budget_and_text_only_placeholder(target, text_target, opts) -> None:
    src = [SAMPLES / "video" / "demo.mp4"]
    full = build_prompt(src, target, options=opts)
    thin = build_prompt(src, target, budget=len(full) - 20, options=opts)
    assert _entry(thin, "demo.mp4").status == "outlined" and len(thin.media) < len(full.media)
    text_only = build_prompt(src, text_target, options=opts)
    assert _entry(text_only, "demo.mp4").status == "path_only" and not text_only.media


def test_text_only_model_gets_image_placeholders(text_target, opts) -> None:
    p = build_prompt([SAMPLES / "images"], text_target, options=opts)
    images = [i for i in p.ledger if i.kind == "image"]
    assert len(images) == 5 and all(i.status == "path_only" for i in images)
    assert all(i.reason == "image omitted: model has no vision input" for i in images)
    assert not p.media


def test_samples_copy_is_identical(tmp_path, target, opts) -> None:
    a = build_prompt([SAMPLES / "images"], target, options=opts)
    b = build_prompt(
        [shutil.copytree(SAMPLES / "images", tmp_path / "images")],
        target,
        options=IngestOptions(cache_dir=tmp_path / "other"),
    )
    assert a.digest() == b.digest()


def test_sample_times_and_webm(tmp_path, target, opts) -> None:
    from ingest.video import sample_times

    assert sample_times(3.0, 1.0, 10) == [0.0, 1.0, 2.0]
    assert sample_times(100.0, 1.0, 4) == [0.0, 25.0, 50.0, 75.0]
    assert sample_times(0.0, 2.0, 3) == [0.0, 0.5, 1.0]  # unknown duration: decode until the end
    path = write(tmp_path, "clip.webm", video_bytes(fmt="webm", codec="libvpx", seconds=3.0, fps=10))
    p = build_prompt([path], target, options=opts)
    assert [round(s.time_s) for s in p.source_map if s.time_s is not None][::2] == [0, 1, 2]


def test_media_file_limit(tmp_path, target, opts) -> None:
    for i in range(4):
        shutil.copy(SAMPLES / "images" / "spinner.gif", tmp_path / f"frame_{i}.gif")
    opts.max_media_files = 2
    p = build_prompt([tmp_path], target, options=opts)
    status = {i.path.split("/")[-1]: (i.status, i.reason) for i in p.ledger if i.kind == "image"}
    assert [status[f"frame_{i}.gif"][0] for i in range(4)] == ["included", "included", "dropped", "dropped"]
    assert "max_media_files" in status["frame_3.gif"][1] and len(p.media) == 2


@pytest.mark.parametrize(
    "name,array",
    [
        ("deep.png", (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)),  # 16-bit grey
        ("float.tiff", np.linspace(-3, 5, 64 * 64, dtype=np.float32).reshape(64, 64)),
    ],
)
def test_high_bit_depth_images_keep_their_contrast(tmp_path, target, opts, name, array) -> None:
    Image.fromarray(array).save(tmp_path / name)
    p = build_prompt([tmp_path / name], target, options=opts)
    (m,) = p.media
    top, bottom = m.patches[0].mean(), m.patches[-1].mean()
    assert top < -0.5 and bottom > 0.5  # dark to bright, not clipped to white


@pytest.mark.parametrize("rotation", [0, 90, -90, 180])
def test_video_display_rotation_is_applied(tmp_path, target, opts, rotation) -> None:
    """A portrait phone recording (landscape frames + a display rotation) is read upright."""
    import io

    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 96, 48, "yuv420p"
        stream.bit_rate = 4_000_000
        if rotation:
            stream.set_display_rotation(rotation)
        pixels = np.zeros((48, 96, 3), np.uint8)
        pixels[:, :48] = 255  # stored frame: white left half, black right half
        for _ in range(5):
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    p = build_prompt([write(tmp_path, "phone.mp4", buf.getvalue())], target, options=opts)
    frame = p.media[0]
    rows, cols = frame.grid
    assert (rows > cols) == (rotation in (90, -90)), frame.grid
    patch = target.patch_size
    img = frame.patches.reshape(rows, cols, patch, patch, 3).transpose(0, 2, 1, 3, 4).reshape(
        rows * patch, cols * patch, 3).mean(-1)
    h, w = img.shape
    # Counterclockwise by `rotation`: the stored left half ends up bottom (90), top (-90), right (180).
    bright = {0: img[:, : w // 2], 90: img[h // 2:], -90: img[: h // 2], 180: img[:, w // 2:]}[rotation]
    assert bright.mean() > img.mean() + 0.5, (rotation, bright.mean(), img.mean())
