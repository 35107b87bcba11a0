"""What ingest needs from a model, read straight from its checkpoint directory.

Ingest must not import runtime/: it needs only the tokenizer, the special token ids and the
patch geometry, all of which live in config.json and tokenizer.json.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from strata.errors import ConfigError

# The default pixel budgets when config.json does not name them: 2x2 patches at least, and a
# 1024x1024 screenshot at most (4096 patches), which keeps small text legible.
DEFAULT_MIN_IMAGE_PIXELS = 32 * 32
DEFAULT_MAX_IMAGE_PIXELS = 1024 * 1024
# The context ingest packs to when the user names no budget (the upper bound).
MAX_DEFAULT_BUDGET = 1_000_000

_VISION_KEYS = (
    "image_start_token_id",
    "image_end_token_id",
    "image_patch_token_id",
    "image_row_token_id",
)


_CALIBRATION = """\
def load_config(path: str, *, strict: bool = True) -> dict[str, object]:
    \"\"\"Read a JSON config file and check the fields we need.\"\"\"
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    for key in ("name", "version"):
        if strict and key not in data:
            raise ValueError(f"missing {key} in {path}")
    return data

export function total(items) {
  return items.reduce((sum, item) => sum + item.price * item.qty, 0);
}

func (s *Server) Handle(w http.ResponseWriter, r *http.Request) error {
\tif r.Method != http.MethodGet {
\t\treturn fmt.Errorf("method %s not allowed", r.Method)
\t}
\treturn nil
}

The service reads its configuration at start-up, validates every field, and refuses to run
with unsafe values. Requests are queued and answered in order; see the README for details.
"""


def _byte_alphabet() -> set[str]:
    """The 256 characters GPT-2's byte-level encoding uses for bytes."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    extra = [256 + n for n in range(256 - len(printable))]
    return {chr(c) for c in printable + extra}


def _byte_lengths(tokenizer: Tokenizer) -> np.ndarray | None:
    spec = json.loads(tokenizer.to_str())
    pre = spec.get("pre_tokenizer") or {}
    if spec.get("normalizer") is not None or pre.get("type") != "ByteLevel" or spec["model"]["type"] != "BPE":
        return None
    alphabet = _byte_alphabet()
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    lengths = np.full(max(vocab.values()) + 1, -(1 << 30), dtype=np.int64)  # unknown ids break sums
    for token, index in vocab.items():
        if all(ch in alphabet for ch in token):
            lengths[index] = len(token)
    return lengths


@dataclass(slots=True)
class Target:
    """A tokenizer plus the MODEL1 multimodal conventions (or none, for text-only models)."""

    tokenizer: Tokenizer
    max_context: int
    patch_size: int | None = None
    num_channels: int = 3
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    image_start_token_id: int | None = None
    image_end_token_id: int | None = None
    image_patch_token_id: int | None = None
    image_row_token_id: int | None = None
    video_start_token_id: int | None = None
    video_end_token_id: int | None = None
    # Qwen2.5-VL: <|vision_start|> <|image_pad|>... <|vision_end|>, pixels through its image
    # processor (`processor`: preprocessor_config.json plus the vision tower's geometry).
    vision_start_token_id: int | None = None
    vision_end_token_id: int | None = None
    image_pad_token_id: int | None = None
    video_pad_token_id: int | None = None
    processor: dict | None = None
    min_image_pixels: int = DEFAULT_MIN_IMAGE_PIXELS
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    fingerprint: str = field(default="", repr=False)
    _memo: dict[str, list[int]] = field(default_factory=dict, repr=False)
    _byte_lengths: list = field(default_factory=list, repr=False)  # [] unknown, [None] or [array]
    _bytes_per_ktoken: list = field(default_factory=list, repr=False)
    _vision_processor: list = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if self.max_context <= 0:
            raise ConfigError("max_context must be positive")
        if self.vision:
            if self.patch_size is None or self.patch_size <= 0 or self.num_channels != 3:
                raise ConfigError("vision targets need a positive patch_size and num_channels 3")
            if not 0 < self.min_image_pixels <= self.max_image_pixels:
                raise ConfigError("need 0 < min_image_pixels <= max_image_pixels")
        # Special-token strings inside user files must be plain text, never control tokens:
        # a README containing "<|image|>" must not open an image run.
        self.tokenizer.encode_special_tokens = True
        # `fingerprint` may arrive holding a digest of tokenizer.json (cheaper than to_str()).
        self.fingerprint = self._compute_fingerprint()

    @property
    def vision(self) -> bool:
        """True when the model takes images: MODEL1's patches or Qwen2.5-VL's processor inputs."""
        ids = [getattr(self, k) for k in _VISION_KEYS]
        return self.patch_size is not None and (all(i is not None for i in ids) or self.qwen_vl)

    @property
    def video(self) -> bool:
        """True when the model also takes video (framing tokens, or Qwen2.5-VL's video input)."""
        return self.vision and (self.qwen_vl or None not in (self.video_start_token_id, self.video_end_token_id))

    @property
    def qwen_vl(self) -> bool:
        """True for a Qwen2.5-VL target: vision runs hold the image processor's pixel values."""
        ids = (self.vision_start_token_id, self.vision_end_token_id, self.image_pad_token_id, self.video_pad_token_id)
        return self.processor is not None and None not in ids

    def vision_processor(self) -> Any:
        """The Qwen2.5-VL image processor for this target (made on first use)."""
        if not self._vision_processor:
            from ingest.qwen_vision import VisionProcessor  # transformers loads only for such a model

            self._vision_processor.append(VisionProcessor(self.processor or {}))
        return self._vision_processor[0]

    @property
    def patch_dim(self) -> int:
        """Length of one patch vector: patch_size * patch_size * num_channels."""
        if self.patch_size is None:
            raise ConfigError("this model has no vision input")
        return self.patch_size * self.patch_size * self.num_channels

    def encode(self, text: str) -> list[int]:
        """Token ids of plain text (special-token strings stay text)."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_fixed(self, text: str) -> list[int]:
        """encode() memoised, for the few fixed strings (closing tags) used for every item."""
        ids = self._memo.get(text)
        if ids is None:
            ids = self._memo[text] = self.encode(text)
        return ids

    def encode_many(self, texts: list[str]) -> list[list[int]]:
        """Token ids of many texts in one parallel call."""
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def token_byte_lengths(self) -> np.ndarray | None:
        """Bytes per token id for a byte-level BPE without normalizer (each character of a
        token stands for one byte), else None. Lets ingest map tokens to lines without offsets."""
        if not self._byte_lengths:
            self._byte_lengths.append(_byte_lengths(self.tokenizer))
        return self._byte_lengths[0]

    def bytes_per_ktoken(self) -> int:
        """Bytes per 1000 tokens on a fixed sample of code and prose: a deterministic size
        estimate of text not yet tokenized (ingest plans large material before tokenizing it)."""
        if not self._bytes_per_ktoken:
            ids = self.encode(_CALIBRATION)
            self._bytes_per_ktoken.append(max(1, len(_CALIBRATION.encode()) * 1000 // max(len(ids), 1)))
        return self._bytes_per_ktoken[0]

    def _compute_fingerprint(self) -> str:
        # Everything that changes extracted token ids or patches must be in here, because the
        # extraction cache is keyed by it.
        h = hashlib.blake2b(digest_size=16)
        h.update(self.fingerprint.encode() or self.tokenizer.to_str().encode())
        geometry = (self.patch_size, self.num_channels, self.min_image_pixels, self.max_image_pixels)
        h.update(repr(geometry).encode())
        if self.processor is not None:
            h.update(json.dumps(self.processor, sort_keys=True).encode())
        return h.hexdigest()

    @classmethod
    def from_model_dir(cls, path: Path, max_context: int | None = None) -> Target:
        """Read config.json and tokenizer.json from a checkpoint directory."""
        path = Path(path)
        config_path, tok_path = path / "config.json", path / "tokenizer.json"
        if not config_path.is_file() or not tok_path.is_file():
            raise ConfigError(f"{path}: a model directory needs config.json and tokenizer.json")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
            raw = tok_path.read_bytes()
            tokenizer = Tokenizer.from_str(raw.decode("utf-8"))
        except (ValueError, OSError, Exception) as exc:  # tokenizers raises bare Exception
            raise ConfigError(f"{path}: cannot read model files: {exc}") from exc
        digest = hashlib.blake2b(raw, digest_size=16).hexdigest()
        if config.get("model_type") == "qwen2_5_vl":
            return qwen_vl_target(path, config, tokenizer, max_context, digest)
        return cls.from_config(config, tokenizer, max_context, tokenizer_digest=digest)

    @classmethod
    def from_config(
        cls, config: dict, tokenizer: Tokenizer, max_context: int | None = None, tokenizer_digest: str = ""
    ) -> Target:
        """Build a target from a parsed config.json and a tokenizer."""
        ctx = max_context or config.get("max_position_embeddings") or MAX_DEFAULT_BUDGET
        ids = {
            k: config.get(k)
            for k in (
                *_VISION_KEYS,
                "bos_token_id",
                "eos_token_id",
                "video_start_token_id",
                "video_end_token_id",
            )
        }
        for key, value in ids.items():
            if isinstance(value, list):  # some HF configs list several eos ids
                ids[key] = value[0] if value else None
        has_vision = all(ids[k] is not None for k in _VISION_KEYS)
        return cls(
            tokenizer=tokenizer,
            max_context=int(ctx),
            patch_size=int(config.get("patch_size", 16)) if has_vision else None,
            num_channels=int(config.get("num_channels", 3)),
            min_image_pixels=int(config.get("min_image_pixels", DEFAULT_MIN_IMAGE_PIXELS)),
            max_image_pixels=int(config.get("max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS)),
            fingerprint=tokenizer_digest,
            **ids,  # type: ignore[arg-type]  # the token-id fields, all int | None
        )


def qwen_vl_target(path: Path, config: dict, tokenizer: Tokenizer, max_context: int | None, digest: str) -> Target:
    """A Qwen2.5-VL target: images fitted to the merged-patch grid within the processor's budget."""
    text = config.get("text_config") or config
    vision = config.get("vision_config") or {}
    pre_file = path / "preprocessor_config.json"
    try:
        pre = json.loads(pre_file.read_text(encoding="utf-8")) if pre_file.is_file() else {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read preprocessor_config.json: {exc}") from exc
    size = pre.get("size") or {}
    lo = int(pre.get("min_pixels") or size.get("shortest_edge") or DEFAULT_MIN_IMAGE_PIXELS)
    hi = int(pre.get("max_pixels") or size.get("longest_edge") or DEFAULT_MAX_IMAGE_PIXELS)
    geometry = {"patch_size": int(vision.get("patch_size", 14)), "merge_size": int(vision.get("spatial_merge_size", 2)),
                "temporal_patch_size": int(vision.get("temporal_patch_size", 2))}
    processor = {k: v for k, v in pre.items() if k in ("image_mean", "image_std", "rescale_factor")} | geometry
    eos = text.get("eos_token_id", config.get("eos_token_id"))
    return Target(
        tokenizer=tokenizer,
        max_context=int(max_context or text.get("max_position_embeddings") or MAX_DEFAULT_BUDGET),
        patch_size=geometry["patch_size"] * geometry["merge_size"],  # one placeholder token per merged patch
        bos_token_id=text.get("bos_token_id"),
        eos_token_id=eos[0] if isinstance(eos, list) else eos,
        vision_start_token_id=config.get("vision_start_token_id"),
        vision_end_token_id=config.get("vision_end_token_id"),
        image_pad_token_id=config.get("image_token_id"),
        video_pad_token_id=config.get("video_token_id"),
        processor=processor,
        min_image_pixels=max(lo, (geometry["patch_size"] * geometry["merge_size"]) ** 2),
        # Ingest's own default caps the processor's (very large) budget; fitted pixels are never resized again.
        max_image_pixels=min(hi, DEFAULT_MAX_IMAGE_PIXELS),
        fingerprint=digest,
    )
