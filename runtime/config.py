"""Model configuration: a Hugging Face config.json mapped onto one validated, slotted dataclass."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from strata.errors import ConfigError

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3", "yarn")


@dataclass(slots=True)
class ModelConfig:
    """Everything the runtime reads from config.json, validated on construction."""

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_type: str = "default"
    rope_params: dict[str, Any] = field(default_factory=dict)
    hidden_act: str = "silu"
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    o_proj_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    sliding_window: int | None = None
    # Mixture of experts (0 experts: dense).
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    norm_topk_prob: bool = False
    decoder_sparse_step: int = 1
    mlp_only_layers: tuple[int, ...] = ()
    n_shared_experts: int = 0
    first_k_dense_replace: int = 0
    routed_scaling_factor: float = 1.0
    # DeepSeek-V2/V3: multi-head latent attention (kv_lora_rank > 0) and group-limited routing.
    # With MLA, num_key_value_heads is 1 and head_dim is kv_lora_rank + qk_rope_head_dim: the cache
    # holds one latent vector per position, read back as both key and value.
    kv_lora_rank: int = 0
    q_lora_rank: int | None = None
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    rope_interleave: bool = False
    n_group: int = 1
    topk_group: int = 1
    topk_method: str = "greedy"
    moe_layer_freq: int = 1
    # Native multimodal input (MODEL1).
    patch_size: int = 0
    num_channels: int = 3
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    special_token_ids: dict[str, int] = field(default_factory=dict)
    quantization: dict[str, Any] | None = None
    torch_dtype: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        positive = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "num_key_value_heads", "head_dim", "max_position_embeddings")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"config field '{name}' must be a positive integer, got {value!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"num_attention_heads ({self.num_attention_heads}) is not a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})")
        if self.hidden_act not in ("silu", "swish"):
            raise ConfigError(f"hidden_act '{self.hidden_act}' is not supported (only silu)")
        if self.rope_type not in SUPPORTED_ROPE_TYPES:
            raise ConfigError(f"rope type '{self.rope_type}' is not supported; supported: "
                              f"{', '.join(SUPPORTED_ROPE_TYPES)}")
        if self.num_experts and not 0 < self.num_experts_per_tok <= self.num_experts:
            raise ConfigError(f"num_experts_per_tok must be in 1..{self.num_experts}, got "
                              f"{self.num_experts_per_tok}")
        if self.num_experts and self.moe_intermediate_size <= 0:
            raise ConfigError("moe_intermediate_size must be positive for a mixture-of-experts model")

    @property
    def latent_kv(self) -> bool:
        """Whether the KV cache holds MLA latents (one plane that is both key and value)."""
        return self.kv_lora_rank > 0

    @property
    def rope_dim(self) -> int:
        """Dimensions RoPE rotates: MLA rotates only the qk_rope_head_dim part of q and k."""
        return self.qk_rope_head_dim or self.head_dim

    @property
    def num_kv_groups(self) -> int:
        return self.num_attention_heads // self.num_key_value_heads

    def is_moe_layer(self, layer: int) -> bool:
        """Whether decoder layer `layer` uses routed experts (Qwen3-MoE and DeepSeekMoE rules)."""
        if not self.num_experts or layer in self.mlp_only_layers or layer < self.first_k_dense_replace:
            return False
        return (layer + 1) % max(self.decoder_sparse_step, 1) == 0

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelConfig:
        """Map a config.json dict (transformers 4.x or 5.x spelling) onto ModelConfig."""
        if "model_type" not in raw:
            raise ConfigError("config.json has no 'model_type'")
        raw = dict(raw)
        if isinstance(raw.get("text_config"), dict) and "hidden_size" not in raw:
            # Top-level fields (tie_word_embeddings, media token ids, vision_config) stay visible.
            raw = {**raw, **raw["text_config"], "model_type": raw["model_type"]}
        kwargs: dict[str, Any] = {"model_type": raw["model_type"], "raw": raw}
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "max_position_embeddings"):
            if raw.get(name) is None:
                raise ConfigError(f"config.json is missing the required field '{name}'")
            kwargs[name] = raw[name]
        kwargs["num_key_value_heads"] = raw.get("num_key_value_heads") or raw["num_attention_heads"]
        kwargs["head_dim"] = raw.get("head_dim") or raw["hidden_size"] // raw["num_attention_heads"]
        kwargs["intermediate_size"] = raw.get("intermediate_size") or 0
        simple = ("rms_norm_eps", "hidden_act", "tie_word_embeddings", "attention_bias", "mlp_bias",
                  "num_experts_per_tok", "moe_intermediate_size", "norm_topk_prob",
                  "decoder_sparse_step", "n_shared_experts", "first_k_dense_replace",
                  "routed_scaling_factor", "patch_size", "num_channels", "bos_token_id")
        for name in simple:
            if raw.get(name) is not None:
                kwargs[name] = raw[name]
        kwargs["num_experts"] = (raw.get("num_experts") or raw.get("num_local_experts")
                              or raw.get("n_routed_experts") or 0)
        kwargs["mlp_only_layers"] = tuple(raw.get("mlp_only_layers") or ())
        if raw.get("use_sliding_window", True) and raw.get("sliding_window"):
            kwargs["sliding_window"] = int(raw["sliding_window"])
        if raw["model_type"] in ("qwen2", "qwen2_5_vl"):
            kwargs["attention_bias"] = True  # Qwen2 always has q/k/v bias and no o_proj bias
        else:
            kwargs["o_proj_bias"] = bool(raw.get("attention_bias", False))
        kwargs["qk_norm"] = raw["model_type"] in ("qwen3", "qwen3_moe") or bool(raw.get("qk_norm"))
        eos = raw.get("eos_token_id")
        kwargs["eos_token_ids"] = tuple(eos if isinstance(eos, list) else [] if eos is None else [eos])
        kwargs["special_token_ids"] = {k: v for k, v in raw.items()
                                       if k.endswith("_token_id") and isinstance(v, int)}
        kwargs["quantization"] = raw.get("quantization_config")
        kwargs["torch_dtype"] = raw.get("dtype") or raw.get("torch_dtype")
        kwargs.update(_rope_fields(raw))
        if raw.get("kv_lora_rank"):
            kwargs.update(_mla_fields(raw))
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in kwargs.items() if k in known})

    @classmethod
    def from_file(cls, path: Path) -> ModelConfig:
        """Read `path` (a config.json or the checkpoint directory holding one)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise ConfigError(f"no config.json at {path}")
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{path} does not hold a JSON object")
        return cls.from_dict(raw)


def _mla_fields(raw: dict[str, Any]) -> dict[str, Any]:
    """DeepSeek-V2/V3 attention and routing fields; the cache sees one latent KV head."""
    out: dict[str, Any] = {name: raw[name] for name in (
        "kv_lora_rank", "q_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
        "n_group", "topk_group", "topk_method", "moe_layer_freq") if raw.get(name) is not None}
    if not raw.get("qk_rope_head_dim") or not raw.get("qk_nope_head_dim") or not raw.get("v_head_dim"):
        raise ConfigError("an MLA config needs positive qk_rope_head_dim, qk_nope_head_dim and v_head_dim")
    out["num_key_value_heads"] = 1
    out["head_dim"] = int(raw["kv_lora_rank"]) + int(raw["qk_rope_head_dim"])
    # transformers' DeepSeek-V2 always rotates interleaved pairs; V3 says so with rope_interleave.
    out["rope_interleave"] = raw["model_type"] == "deepseek_v2" or bool(raw.get("rope_interleave", True))
    return out


def _rope_fields(raw: dict[str, Any]) -> dict[str, Any]:
    """RoPE settings from either `rope_parameters` (transformers 5) or `rope_theta`/`rope_scaling`."""
    params: dict[str, Any] = dict(raw.get("rope_parameters") or {})
    scaling = raw.get("rope_scaling") or {}
    params = {**scaling, **params}
    theta = params.get("rope_theta", raw.get("rope_theta", 10000.0))
    rope_type = params.get("rope_type") or params.get("type") or "default"
    if rope_type == "mrope":  # Qwen2.5-VL 4.x spelling: default frequencies, sections in mrope_section
        rope_type = "default"
    return {"rope_theta": float(theta), "rope_type": rope_type, "rope_params": params}
