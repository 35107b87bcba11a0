"""A tiny random Qwen2.5-VL checkpoint (seeded) with a local byte-level tokenizer and image processor."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from ingest.qwen_vision import Processed, VisionProcessor
from runtime.models.qwen2_5_vl import VisionInput

SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
           "<|image_pad|>", "<|video_pad|>")
BYTES = 256  # the byte alphabet takes ids 0..255; the special tokens follow in SPECIAL's order
IMAGE_PAD, VIDEO_PAD, VISION_START, VISION_END = BYTES + 5, BYTES + 6, BYTES + 3, BYTES + 4
PROCESSOR = {"patch_size": 4, "merge_size": 2, "temporal_patch_size": 2, "min_pixels": 8 * 8,
             "max_pixels": 32 * 32, "image_processor_type": "Qwen2VLImageProcessor"}


def tiny_config() -> transformers.Qwen2_5_VLConfig:
    text = dict(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=2048, bos_token_id=None, eos_token_id=BYTES,
                rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0})
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=4,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=16, fullatt_block_indexes=[1],
                  tokens_per_second=2)
    return transformers.Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=IMAGE_PAD,
                                         video_token_id=VIDEO_PAD, vision_start_token_id=VISION_START,
                                         vision_end_token_id=VISION_END, tie_word_embeddings=False)


def build_tokenizer() -> Tokenizer:
    """Byte-level BPE with no merges (one token per byte) plus Qwen's special tokens."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL))
    assert tok.token_to_id("<|image_pad|>") == IMAGE_PAD
    return tok


def write_tiny_qwen2_5_vl(path: Path, seed: int = 0) -> transformers.Qwen2_5_VLForConditionalGeneration:
    """Save the seeded model, tokenizer.json and preprocessor_config.json to `path`; return the model."""
    torch.manual_seed(seed)
    config = tiny_config()
    config._attn_implementation = "sdpa"
    model = transformers.Qwen2_5_VLForConditionalGeneration(config).float()
    with torch.no_grad():  # default init leaves norms at 1 and biases at 0; perturb them so they are tested
        for name, p in model.named_parameters():
            if name.endswith(("norm.weight", "norm1.weight", "norm2.weight", "ln_q.weight")):
                p.add_(torch.randn_like(p) * 0.1)
            elif name.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.02)
            elif "visual" in name and p.dim() > 1:
                p.normal_(0, 0.3)  # std 0.02 would leave the vision tower's output too small to matter
    model.eval()
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    build_tokenizer().save(str(path / "tokenizer.json"))
    (path / "preprocessor_config.json").write_text(json.dumps(PROCESSOR))
    return model


def random_pixels(height: int, width: int, seed: int, frames: int = 0) -> np.ndarray:
    """uint8 RGB [H, W, 3], or [frames, H, W, 3] of a slowly changing scene."""
    rng = np.random.default_rng(seed)
    if not frames:
        return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    base = rng.integers(0, 200, (height, width, 3))
    return np.stack([(base + 20 * i) % 256 for i in range(frames)]).astype(np.uint8)


@dataclass
class MixedPrompt:
    """Text, an image and a video in Qwen2.5-VL's layout, with transformers' inputs for the same."""

    ids: list[int]
    media: list[VisionInput]
    image: Processed
    video: Processed

    def reference_inputs(self) -> dict:
        kinds = [1 if t == IMAGE_PAD else 2 if t == VIDEO_PAD else 0 for t in self.ids]
        return dict(input_ids=torch.tensor([self.ids]), mm_token_type_ids=torch.tensor([kinds]),
                    pixel_values=self.image.pixel_values, image_grid_thw=torch.tensor([self.image.grid_thw]),
                    pixel_values_videos=self.video.pixel_values, video_grid_thw=torch.tensor([self.video.grid_thw]),
                    second_per_grid_ts=torch.tensor([self.video.second_per_grid]))


def mixed_prompt(tok: Tokenizer, image: np.ndarray, video: np.ndarray, fps: float = 2.0,
                 preamble: str = "") -> MixedPrompt:
    """'[preamble] text <image> text <video> question' with placeholder runs sized by the processor."""
    proc = VisionProcessor(PROCESSOR)
    img, vid = proc.image(image), proc.video(video, fps)
    ids = tok.encode(preamble + "Look at this picture: ").ids + [VISION_START]
    image_at = len(ids)
    ids += [IMAGE_PAD] * img.tokens(2) + [VISION_END] + tok.encode(" and this clip: ").ids + [VISION_START]
    video_at = len(ids)
    ids += [VIDEO_PAD] * vid.tokens(2) + [VISION_END] + tok.encode(" What changes between them?").ids
    media = [VisionInput(image_at, img.tokens(2), img.pixel_values, img.grid_thw,
                         _digest(b"image" + image.tobytes())),
             VisionInput(video_at, vid.tokens(2), vid.pixel_values, vid.grid_thw,
                         _digest(b"video" + video.tobytes()), kind="video",
                         second_per_grid=vid.second_per_grid)]
    return MixedPrompt(ids, media, img, vid)


def _digest(data: bytes) -> bytes:
    import xxhash

    return xxhash.xxh3_128(data).digest()
