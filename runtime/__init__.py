"""The runtime: model families, FP8 weights, the paged KV cache and the generation engine."""

from runtime.engine import Completion, Engine, Generation, TokenEvent
from runtime.sampling import SamplingParams

__all__ = ["Completion", "Engine", "Generation", "SamplingParams", "TokenEvent"]
