"""Small builders shared by the ingest tests."""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def write(root: Path, rel: str, content: str | bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def git(root: Path, *args: str) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, env=env)


def has_git() -> bool:
    return shutil.which("git") is not None


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header claiming a huge image, with a tiny (incomplete) body."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def video_bytes(
    fmt: str = "mp4",
    codec: str = "mpeg4",
    seconds: float = 4.0,
    fps: int = 10,
    size: tuple[int, int] = (64, 48),
) -> bytes:
    """A small synthetic video whose red level encodes the frame index (frame_red)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.bit_rate = 4_000_000  # near-lossless: a frame's colour identifies it
        for i in range(int(seconds * fps)):
            red = frame_red(i)
            img = Image.new("RGB", size, (red, 40, 90))
            ImageDraw.Draw(img).rectangle([i % size[0], 10, i % size[0] + 8, 30], fill=(red, 255, 255))
            frame = av.VideoFrame.from_ndarray(np.asarray(img), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def frame_red(index: int) -> int:
    """The red level of frame `index` in video_bytes: it identifies the frame."""
    return round(index * 2.5) % 256


def random_bytes(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
