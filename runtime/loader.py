"""Loading a checkpoint directory (config.json, *.safetensors, tokenizer.json) into a model.

The model is built on the meta device and every tensor is assigned from the checkpoint by name,
so nothing is allocated twice. Weights are FP8 (kept, or quantised on load), bf16 or fp32.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from safetensors import safe_open
from torch import nn

from runtime.config import ModelConfig
from runtime.models import model_class
from strata.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)
WEIGHT_MODES = ("auto", "fp8", "bf16", "fp32")
# Tensors a checkpoint may carry that the runtime recomputes instead of loading.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


@dataclass(slots=True)
class LoadedModel:
    model: nn.Module
    config: ModelConfig
    weights: str  # the mode actually used: fp8 | bf16 | fp32
    compute_dtype: torch.dtype
    tokenizer: Any | None


class TensorReader:
    """Every tensor of the checkpoint's safetensors files, by name."""

    def __init__(self, path: Path) -> None:
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise CheckpointError(f"no *.safetensors files in {path}")
        self.handles = [safe_open(str(f), framework="pt") for f in files]
        self.where: dict[str, Any] = {}
        for handle in self.handles:
            for name in handle.keys():
                self.where[name] = handle

    def __contains__(self, name: str) -> bool:
        return name in self.where

    def get(self, name: str) -> torch.Tensor:
        return self.where[name].get_tensor(name)

    def dtype_of(self, name: str) -> torch.dtype:
        return self.where[name].get_slice(name).get_dtype()  # type: ignore[no-any-return]


def resolve_weights(cfg: ModelConfig, reader: TensorReader, weights: str) -> str:
    """The weight mode for `weights` ("auto" follows the checkpoint)."""
    if weights not in WEIGHT_MODES:
        raise ConfigError(f"weights must be one of {', '.join(WEIGHT_MODES)}, got '{weights}'")
    if weights != "auto":
        return weights
    quant = cfg.quantization or {}
    if quant.get("quant_method") == "fp8":
        return "fp8"
    return "fp32" if (cfg.torch_dtype or "float32") in ("float32", "fp32") else "bf16"


def check_quantization(cfg: ModelConfig) -> tuple[int, int] | None:
    """The block size of a native FP8 checkpoint, or None for a float checkpoint."""
    quant = cfg.quantization
    if not quant:
        return None
    if quant.get("quant_method") != "fp8":
        raise ConfigError(f"quantization_config.quant_method '{quant.get('quant_method')}' is not supported "
                          f"(only fp8)")
    block = quant.get("weight_block_size")
    if not (isinstance(block, list) and len(block) == 2):
        raise ConfigError("quantization_config.weight_block_size must be a list of two integers")
    return int(block[0]), int(block[1])


def quantizable(name: str, module: nn.Module) -> bool:
    """Every linear layer and the embedding table go FP8; norms and routers keep precision.

    Unlike DeepSeek-V3 the output head and embeddings are quantised too: in models with large
    vocabularies relative to their width they are too many of the bytes to leave at bf16. A vision
    tower (`visual.*`) is not: it is a few percent of the bytes, runs once per image rather than
    per token, and its errors reach every image token (FP8 tokens left the fp32 ones after 7 on
    the tiny Qwen2.5-VL). FP8 vision weights in a checkpoint are dequantised on load.
    """
    return isinstance(module, nn.Linear | nn.Embedding) and not name.startswith("visual.")


def load_model(path: str | Path, weights: str = "auto", device: str = "cpu") -> LoadedModel:
    """Build the family named by config.json and fill it from the checkpoint in `path`."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"model directory {path} does not exist")
    cfg = ModelConfig.from_file(path)
    block = check_quantization(cfg)
    reader = TensorReader(path)
    mode = resolve_weights(cfg, reader, weights)
    dtype = torch.float32 if mode == "fp32" else torch.bfloat16
    with torch.device("meta"):
        model = model_class(cfg)(cfg)
    if mode == "fp8":
        _swap_to_fp8(model, block or (128, 128))
    _assign_all(model, reader, cfg, dtype, block)
    model.eval()
    return LoadedModel(model.to(device), cfg, mode, dtype, load_tokenizer(path))


def _swap_to_fp8(model: nn.Module, block: tuple[int, int]) -> None:
    from runtime.fp8 import FP8Linear
    from runtime.fp8_embedding import FP8Embedding

    for name, module in list(model.named_modules()):
        if not quantizable(name, module):
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        new: nn.Module
        if isinstance(module, nn.Embedding):
            new = FP8Embedding(module.num_embeddings, module.embedding_dim, block)
        else:
            assert isinstance(module, nn.Linear)
            new = FP8Linear(module.in_features, module.out_features, module.bias is not None, block)
        setattr(parent, child, new)


def _assign_all(model: nn.Module, reader: TensorReader, cfg: ModelConfig, dtype: torch.dtype,
                block: tuple[int, int] | None) -> None:
    from runtime.fp8 import FP8Linear
    from runtime.fp8_embedding import FP8Embedding

    expected: set[str] = set()
    float32 = tuple(getattr(model, "float32_params", ()))  # kept at full precision whatever `dtype`
    for mod_name, module in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        if mod_name == "lm_head" and cfg.tie_word_embeddings:
            continue
        if isinstance(module, FP8Linear | FP8Embedding):
            expected |= _assign_fp8(module, prefix, reader, block)
            continue
        for pname, param in list(module.named_parameters(recurse=False)):
            full = prefix + pname
            if full == "lm_head.weight" and (cfg.tie_word_embeddings or full not in reader):
                if not cfg.tie_word_embeddings:
                    raise CheckpointError("checkpoint has no 'lm_head.weight' and the config does not tie "
                                          "word embeddings")
                continue
            tensor = _float_tensor(reader, full, block, tuple(param.shape))
            keep = torch.float32 if float32 and full.endswith(float32) else dtype
            module._parameters[pname] = nn.Parameter(tensor.to(keep), requires_grad=False)
            expected.add(full)
            expected.add(full + "_scale_inv")
    if cfg.tie_word_embeddings:
        _tie(model)
    ignores = getattr(model, "ignores_tensor", lambda name: False)  # e.g. DeepSeek's MTP layers
    unexpected = [n for n in reader.where
                  if n not in expected and not n.endswith(IGNORED_SUFFIXES) and not ignores(n)]
    if unexpected:
        raise CheckpointError(f"checkpoint has {len(unexpected)} tensors this '{cfg.model_type}' model does "
                              f"not use, e.g. {', '.join(sorted(unexpected)[:5])}")


def _tie(model: nn.Module) -> None:
    """Point the output head at the embedding table (FP8 buffers or a float parameter)."""
    head = cast(nn.Module, model.lm_head)
    table = cast(nn.Module, model.model.embed_tokens)  # type: ignore[union-attr]
    head.weight = table.weight
    if hasattr(table, "weight_scale_inv"):
        head.weight_scale_inv = table.weight_scale_inv


def _float_tensor(reader: TensorReader, name: str, block: tuple[int, int] | None,
                  shape: tuple[int, ...]) -> torch.Tensor:
    """A tensor in floating point, dequantising an FP8 one with its block scales."""
    if name not in reader:
        raise CheckpointError(f"checkpoint is missing the tensor '{name}'")
    tensor = reader.get(name)
    if tuple(tensor.shape) != shape:
        raise CheckpointError(f"tensor '{name}' has shape {tuple(tensor.shape)}, the model expects {shape}")
    if tensor.dtype == torch.float8_e4m3fn:
        from runtime.fp8 import dequantize_block_fp8

        scale_name = name + "_scale_inv"
        if scale_name not in reader:
            raise CheckpointError(f"FP8 tensor '{name}' has no '{scale_name}'")
        tensor = dequantize_block_fp8(tensor, reader.get(scale_name), torch.float32, block or (128, 128))
    return tensor


def _assign_fp8(module: nn.Module, prefix: str, reader: TensorReader,
                block: tuple[int, int] | None) -> set[str]:
    from runtime.fp8 import quantize_block_fp8

    name = prefix + "weight"
    shape = tuple(cast(torch.Tensor, module.weight).shape)
    if name in reader and reader.dtype_of(name) == torch.float8_e4m3fn:
        weight = reader.get(name)
        if tuple(weight.shape) != shape:
            raise CheckpointError(f"tensor '{name}' has shape {tuple(weight.shape)}, "
                                  f"the model expects {shape}")
        scale = reader.get(name + "_scale_inv") if name + "_scale_inv" in reader else None
        if scale is None:
            raise CheckpointError(f"FP8 tensor '{name}' has no '{name}_scale_inv'")
    else:
        weight, scale = quantize_block_fp8(_float_tensor(reader, name, block, shape).float(),
                                           cast(tuple[int, int], module.block))
    module.weight = weight
    module.weight_scale_inv = scale.float()
    names = {name, name + "_scale_inv"}
    if getattr(module, "bias", None) is not None:
        bias = _float_tensor(reader, prefix + "bias", block, (shape[0],))
        module.bias = nn.Parameter(bias.float(), requires_grad=False)
        names.add(prefix + "bias")
    return names


def load_tokenizer(path: Path) -> Any | None:
    """The checkpoint's tokenizer.json as a `tokenizers.Tokenizer`, or None when it has none."""
    file = path / "tokenizer.json"
    if not file.is_file():
        return None
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(file))
    except Exception as exc:  # tokenizers raises a bare Exception on a malformed file
        raise CheckpointError(f"cannot read {file}: {exc}") from exc


def checkpoint_fingerprint(path: Path, samples: int = 64, chunk: int = 1 << 16) -> bytes:
    """Identity of config and weights: config bytes, each file's header, size and sampled contents.

    Reading every byte of a multi-GB checkpoint would cost seconds per start; chunks at fixed
    offsets tell apart any two real checkpoints (different weights differ everywhere).
    """
    import xxhash

    digest = xxhash.xxh3_128()
    digest.update((path / "config.json").read_bytes())
    for file in sorted(path.glob("*.safetensors")):
        size = file.stat().st_size
        digest.update(f"{file.name}:{size}".encode())
        with open(file, "rb") as fh:
            header = int.from_bytes(fh.read(8), "little")
            digest.update(fh.read(min(header, 1 << 26)))
            for i in range(samples):
                fh.seek(size * i // samples)
                digest.update(fh.read(chunk))
    return digest.digest()


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())  # type: ignore[no-any-return]
