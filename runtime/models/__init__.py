"""Model families by model_type."""

from __future__ import annotations

from torch import nn

from runtime.config import ModelConfig
from strata.errors import ConfigError


def model_class(cfg: ModelConfig) -> type[nn.Module]:
    """The module class that runs `cfg.model_type`."""
    from runtime.models.deepseek import DeepseekForCausalLM
    from runtime.models.llama import CausalLM
    from runtime.models.model1 import Model1ForCausalLM
    from runtime.models.qwen2_5_vl import Qwen2_5_VLForCausalLM
    from runtime.models.qwen3_moe import Qwen3MoeForCausalLM

    families: dict[str, type[nn.Module]] = {
        "llama": CausalLM, "mistral": CausalLM, "qwen2": CausalLM, "qwen3": CausalLM,
        "qwen3_moe": Qwen3MoeForCausalLM, "strata_model1": Model1ForCausalLM,
        "qwen2_5_vl": Qwen2_5_VLForCausalLM,
        "deepseek_v2": DeepseekForCausalLM, "deepseek_v3": DeepseekForCausalLM,
    }
    if cfg.model_type not in families:
        raise ConfigError(f"unknown model_type '{cfg.model_type}'; supported: {', '.join(sorted(families))}")
    return families[cfg.model_type]
