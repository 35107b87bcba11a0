"""Pixels -> Qwen2.5-VL inputs (pixel_values, grid_thw) through transformers' own image processor.

Ingest runs it, so prompts carry what the vision tower takes; the runtime never resizes.

Images go through Qwen2VLImageProcessorPil, the processor transformers uses when torchvision is
absent (it is here: PyPI's torchvision does not match this torch). Qwen2VLVideoProcessor needs
torchvision, so a video is made from the same image processor: each frame is resized and
normalised by it exactly as an image would be, then `temporal_patch_size` consecutive frames are
grouped into one temporal patch in the layout the video processor produces (the last frame
repeated to fill the final group). The one difference from transformers' video path is the
resize kernel (PIL bicubic here, torchvision's there), a sub-pixel difference in the inputs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xxhash
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from strata.errors import BadRequest, ConfigError

PROCESSOR_FIELDS = ("patch_size", "merge_size", "temporal_patch_size", "min_pixels", "max_pixels", "size",
                    "image_mean", "image_std", "do_resize", "do_rescale", "do_normalize", "rescale_factor")


@dataclass(slots=True)
class Processed:
    pixel_values: torch.Tensor  # float32 [t*h*w, channels * temporal_patch * patch * patch]
    grid_thw: tuple[int, int, int]
    second_per_grid: float = 1.0

    def tokens(self, merge: int) -> int:
        """Placeholder tokens this input fills."""
        t, h, w = self.grid_thw
        return t * h * w // (merge * merge)

    def media_hash(self) -> bytes:
        """16-byte xxh3_128 of everything that shapes the model's view: values, grid, time step."""
        h = xxhash.xxh3_128()
        h.update(np.asarray(self.grid_thw, dtype="<u4").tobytes())
        h.update(np.asarray([self.second_per_grid], dtype="<f8").tobytes())
        h.update(np.ascontiguousarray(self.pixel_values.numpy(), dtype="<f4").tobytes())
        return h.digest()


class VisionProcessor:
    """The checkpoint's preprocessor_config.json applied to uint8 RGB images and video frames."""

    def __init__(self, settings: dict[str, Any]) -> None:
        kwargs = {k: v for k, v in settings.items() if k in PROCESSOR_FIELDS}
        self.image_processor = Qwen2VLImageProcessorPil(**kwargs)
        self.patch = int(self.image_processor.patch_size)
        self.merge = int(self.image_processor.merge_size)
        self.temporal = int(self.image_processor.temporal_patch_size)

    @classmethod
    def from_model_dir(cls, path: str | Path) -> VisionProcessor:
        """Read `path`/preprocessor_config.json."""
        file = Path(path) / "preprocessor_config.json"
        if not file.is_file():
            raise ConfigError(f"{path}: a qwen2_5_vl checkpoint needs preprocessor_config.json")
        try:
            return cls(json.loads(file.read_text()))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {file}: {exc}") from exc

    def image(self, pixels: np.ndarray, resize: bool = True) -> Processed:
        """One image [H, W, 3] uint8, resized to the processor's grid within its pixel budget
        (`resize` False: pixels already fitted to multiples of patch * merge, kept as they are)."""
        out = self.image_processor(images=[_pil(pixels)], return_tensors="np", do_resize=resize)
        grid = tuple(int(v) for v in out["image_grid_thw"][0])
        return Processed(torch.from_numpy(np.ascontiguousarray(out["pixel_values"])), grid)  # type: ignore[arg-type]

    def video(self, frames: np.ndarray, fps: float, resize: bool = True) -> Processed:
        """Frames [T, H, W, 3] uint8 sampled at `fps`, grouped `temporal_patch_size` at a time."""
        if frames.ndim != 4 or not len(frames) or fps <= 0:
            raise BadRequest("a video needs frames [T, H, W, 3] and a positive fps")
        whole = self.patch * self.merge  # normalise each frame as one image with merge 1, then undo patches
        out = self.image_processor(images=[_pil(f) for f in frames], return_tensors="np", do_resize=resize,
                                   patch_size=whole, merge_size=1, temporal_patch_size=1)  # type: ignore[call-arg]
        _, gh, gw = (int(v) for v in out["image_grid_thw"][0])
        channels = out["pixel_values"].shape[1] // (whole * whole)
        planes = out["pixel_values"].reshape(len(frames), gh, gw, channels, whole, whole)
        planes = planes.transpose(0, 3, 1, 4, 2, 5).reshape(len(frames), channels, gh * whole, gw * whole)
        if pad := -len(planes) % self.temporal:
            planes = np.concatenate([planes, np.repeat(planes[-1:], pad, axis=0)])
        return Processed(torch.from_numpy(self._patchify(planes)), (len(planes) // self.temporal, gh * self.merge,
                                                                    gw * self.merge), self.temporal / fps)

    def _patchify(self, planes: np.ndarray) -> np.ndarray:
        """[T, C, H, W] -> [t*h*w, C*temporal*patch*patch] in Qwen2VLVideoProcessor's order."""
        frames, channels, height, width = planes.shape
        p, m, tp = self.patch, self.merge, self.temporal
        gt, gh, gw = frames // tp, height // p, width // p
        x = planes.reshape(gt, tp, channels, gh // m, m, p, gw // m, m, p).transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
        return np.ascontiguousarray(x.reshape(gt * gh * gw, channels * tp * p * p), dtype=np.float32)


def _pil(pixels: np.ndarray) -> Image.Image:
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise BadRequest(f"images must be uint8 [H, W, 3], got {pixels.dtype} {list(pixels.shape)}")
    return Image.fromarray(pixels)
