"""Video: frames sampled at a target fps within a frame budget, each with its timestamp.

Short gaps between samples are decoded through; long gaps are seeked, so a two-hour recording
costs about as much as its sampled frames. A stream that breaks mid-way yields the frames
decoded so far and a warning; one that yields nothing is an error. Frames are turned upright by
the stream's display rotation (portrait phone recordings).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
from PIL import Image

from ingest.images import fit_pixels
from ingest.options import IngestOptions
from strata.errors import IngestError

_AV_ERRORS = (av.error.FFmpegError, OSError, ValueError, EOFError)


@dataclass(slots=True)
class VideoExtract:
    """Sampled frames with their timestamps, the stream duration and warnings."""

    times: list[float] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)  # uint8 [H, W, 3], fitted
    duration: float = 0.0
    warnings: list[str] = field(default_factory=list)


def sample_times(duration: float, fps: float, max_frames: int) -> list[float]:
    """Timestamps to sample: every 1/fps seconds, spread evenly when over the frame budget.

    An unknown duration (0; live recordings often lack it) samples every 1/fps seconds up to
    the frame budget, and decoding simply stops where the stream ends.
    """
    if duration <= 0:
        return [k / fps for k in range(max_frames)]
    n = int(duration * fps) + 1
    if n <= max_frames:
        return [k / fps for k in range(n) if k / fps < duration or k == 0]
    step = duration / max_frames
    return [k * step for k in range(max_frames)]


def extract_video(path: Path, opts: IngestOptions, patch: int, min_px: int, max_px: int) -> VideoExtract:
    """Sampled, fitted frames with timestamps (seconds from the stream start)."""
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except _AV_ERRORS as exc:
        raise IngestError(f"cannot open video: {exc}") from exc
    try:
        if not container.streams.video:
            raise IngestError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        out = VideoExtract(duration=_duration(container, stream))
        targets = sample_times(out.duration, opts.video_fps, opts.video_max_frames)
        _decode(container, stream, targets, out, opts, (patch, min_px, max_px))
    finally:
        container.close()
    if not out.frames:
        detail = f": {out.warnings[-1]}" if out.warnings else ""
        raise IngestError(f"no decodable video frame{detail}")
    return out


def _upright(frame: av.VideoFrame) -> Image.Image:
    """The frame as it is meant to be shown: the display matrix's rotation applied.

    Phones store portrait recordings as landscape frames plus a rotation; without it a model sees
    the screen sideways. PyAV reports the counterclockwise angle, the same sense as PIL's rotate.
    """
    img = frame.to_image()
    degrees = int(round((frame.rotation or 0) / 90.0)) * 90 % 360
    return img.rotate(degrees, expand=True) if degrees else img


def _duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return 0.0


def _decode(
    container,
    stream,
    targets: list[float],
    out: VideoExtract,
    opts: IngestOptions,
    geometry: tuple[int, int, int],
) -> None:
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    i, last_t = 0, -1.0
    frames = container.decode(stream)
    try:
        while i < len(targets):
            want = targets[i]
            if want - max(last_t, 0.0) > opts.video_seek_gap_s:
                container.seek(int((start + want) / stream.time_base), stream=stream, backward=True)
                frames = container.decode(stream)
            frame = next(frames, None)
            if frame is None:
                break
            t = (float(frame.time) if frame.time is not None else last_t + 1e-3) - start
            last_t = t
            if t + 1e-6 < want:
                continue
            while i + 1 < len(targets) and targets[i + 1] <= t + 1e-6:
                i += 1  # sparse keyframes after a seek: this frame stands for skipped targets
            out.times.append(round(max(t, 0.0), 3))
            out.frames.append(fit_pixels(_upright(frame), *geometry))
            i += 1
    except _AV_ERRORS as exc:
        out.warnings.append(f"stream damaged after {len(out.frames)} frames ({exc})")
    if i < len(targets) and not out.warnings and out.frames and out.duration > 0:
        out.warnings.append(f"stream ended at {last_t:.2f}s, before the sampled {targets[i]:.2f}s")
