"""The engine: one model, its page pool, and the prefill / decode loop that streams tokens."""

from __future__ import annotations

import atexit
import os
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from runtime.config import ModelConfig
from runtime.kv import KVCache, KVLayout, PagePool
from runtime.loader import LoadedModel, checkpoint_fingerprint, load_model
from runtime.prefix_cache import PrefixCache, SequenceKeys
from runtime.sampling import Sampler, SamplingParams, StreamDecoder
from runtime.sparse import SparsePolicy
from runtime.sparse_kv import SparseKVCache
from strata.errors import BadRequest, ConfigError, PromptTooLong
from strata.settings import get_settings


class MediaInput(Protocol):
    """An image or video in the prompt: `length` positions from `start`. `patches` is what the family
    takes: MODEL1 one patch vector per <|patch|>, Qwen2.5-VL the processor's pixel values."""

    start: int
    length: int
    patches: Any  # array-like [n_patches, patch_dim]
    media_hash: bytes


LAYER_CACHE_SHARE = 2  # of the device tier, for single fetched layers when attention is sparse


@dataclass(slots=True)
class EngineOptions:
    kv_dtype: str = "auto"
    page_size: int = 64
    prefill_chunk: int = 512
    kv_pool_bytes: int = 1 << 30
    attention_budget: int = 0  # tokens of selected pages per query beyond sink and window; 0 = dense
    device: str = "cpu"  # where the weights, the page pool (the device tier) and activations live

    def __post_init__(self) -> None:
        if self.kv_dtype not in ("auto", "fp8", "bf16", "fp32"):
            raise ConfigError(f"kv_dtype must be auto, fp8, bf16 or fp32, got '{self.kv_dtype}'")
        if self.page_size < 1 or self.prefill_chunk < 1:
            raise ConfigError("page_size and prefill_chunk must be positive")
        if self.attention_budget < 0:
            raise ConfigError("attention_budget must not be negative")


@dataclass(slots=True)
class TokenEvent:
    token: int
    text: str


@dataclass(slots=True)
class Completion:
    token_ids: list[int]
    text: str
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    ttft_s: float
    decode_tokens_per_s: float
    total_s: float
    extra: dict[str, Any] = field(default_factory=dict)
    attention: torch.Tensor | None = None  # mass per prompt position, when asked for


class Generation:
    """An in-progress generation: iterate for tokens as they are produced; `result` once done."""

    def __init__(self, events: Generator[TokenEvent, None, Completion]) -> None:
        self._events = events
        self.result: Completion | None = None

    def __iter__(self) -> Iterator[TokenEvent]:
        self.result = yield from self._events


class Engine:
    """Runs one checkpoint on one device with a paged KV cache."""

    def __init__(self, loaded: LoadedModel, options: EngineOptions, path: Path | None = None,
                 store: Any = None, cache: bool = True) -> None:
        self.model = loaded.model
        self.config: ModelConfig = loaded.config
        self.tokenizer = loaded.tokenizer
        self.weights = loaded.weights
        self.dtype = loaded.compute_dtype
        self.options = options
        self.path = path
        storage = options.kv_dtype
        if storage == "auto":
            storage = "fp32" if self.dtype == torch.float32 else "bf16"
        self.layout = KVLayout.for_model(self.config, options.page_size, storage, self.dtype)
        self.device = torch.device(options.device)
        # Sliding-window models already bound their attention; sparse selection is for the others.
        self.policy = (SparsePolicy(options.attention_budget, options.page_size)
                       if options.attention_budget and self.config.sliding_window is None else None)
        self.fingerprint = checkpoint_fingerprint(path) if path else b""
        self.store = store
        use_cache = bool(cache and self.fingerprint)
        # A sparse engine with a store splits the device tier: whole pages (held and recently let
        # go) in the pool, single layers of pages fetched for attention in the layer cache.
        layer_bytes = options.kv_pool_bytes // LAYER_CACHE_SHARE if use_cache and self.policy else 0
        self.pool = PagePool(self.layout, options.kv_pool_bytes - layer_bytes, device=self.device)
        self.cache = PrefixCache(self.pool, store, self.fingerprint, layer_bytes) if use_cache else None
        self.kv_peak: dict[str, int] = {}
        if store is not None:
            atexit.register(self.close)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", weights: str = "auto",
                        kv_dtype: str | None = None, page_size: int | None = None,
                        prefill_chunk: int | None = None, cache: bool | None = None,
                        attention_budget: int | None = None) -> Engine:
        """Load a checkpoint directory (config.json, *.safetensors, optional tokenizer.json).

        With the cache on (STRATA_CACHE, default true), full KV pages are kept in the pool, host
        RAM and LMDB under STRATA_HOME (and Redis with STRATA_KV_REDIS_URL) and reused by any
        later prompt with the same prefix, in this process or another. With an attention budget
        (STRATA_ATTENTION_BUDGET tokens, 0 = dense), contexts longer than the budget decode and
        prefill with sparse attention over selected pages, and let go of the pages they do not
        attend: the tier budgets, not the prompt, bound the resident KV.
        """
        if device != "cpu" and not device.startswith("cuda"):
            raise ConfigError(f"device '{device}' is not supported (cpu or cuda)")
        settings = get_settings()
        threads = settings.threads or os.cpu_count() or 1
        torch.set_num_threads(threads)
        budget = settings.attention_budget if attention_budget is None else attention_budget
        if budget and device != "cpu":
            raise ConfigError("sparse attention (an attention budget) runs on the CPU only for now; "
                              "use --attention-budget 0 on cuda")
        options = EngineOptions(kv_dtype or settings.kv_dtype, page_size or settings.page_size,
                                prefill_chunk or settings.prefill_chunk, settings.kv_device_bytes, budget, device)
        loaded = load_model(path, weights, device)
        use_cache = settings.cache if cache is None else cache
        store = None
        if use_cache:
            from runtime.prefix_cache import acquire_store

            store = acquire_store(settings)
        return cls(loaded, options, Path(path), store, use_cache)

    def close(self) -> None:
        """Finish writing queued pages to the persistent tiers and close them."""
        if self.store is not None:
            from runtime.prefix_cache import release_store

            release_store(self.store)
            self.store = None
            if self.cache is not None:
                self.cache.detach()

    # -- the contract -------------------------------------------------------------------------
    def generate(self, prompt_ids: list[int], max_new_tokens: int, temperature: float = 0.0) -> list[int]:
        """New token ids for `prompt_ids` (greedy at temperature 0)."""
        params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature)
        return self.run(prompt_ids, params).token_ids

    # -- text ---------------------------------------------------------------------------------
    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        if self.tokenizer is None:
            raise ConfigError("this checkpoint has no tokenizer.json; pass token ids instead of text")
        ids: list[int] = self.tokenizer.encode(text, add_special_tokens=False).ids
        bos = self.config.bos_token_id
        return [bos, *ids] if add_bos and bos is not None else ids

    def decode(self, ids: Sequence[int]) -> str:
        if self.tokenizer is None:
            return ""
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    # -- the loop -----------------------------------------------------------------------------
    def run(self, prompt_ids: Sequence[int], params: SamplingParams,
            media: Sequence[MediaInput] = (), attribution: bool = False, tenant: str = "") -> Completion:
        gen = self.stream(prompt_ids, params, media, attribution, tenant)
        for _ in gen:
            pass
        assert gen.result is not None
        return gen.result

    def stream(self, prompt_ids: Sequence[int], params: SamplingParams,
               media: Sequence[MediaInput] = (), attribution: bool = False,
               tenant: str = "") -> Generation:
        """Start generating; tokens arrive as the returned Generation is iterated.

        With `attribution`, the result carries the attention mass the answer put on each prompt
        position (the citations' raw material). `tenant` salts the prefix-cache keys: tenants
        never share cached pages. Not thread-safe: one generation at a time per engine.
        """
        self._check_prompt(prompt_ids, params)
        return Generation(self._loop(list(prompt_ids), params, media, attribution, tenant))

    def _check_prompt(self, prompt_ids: Sequence[int], params: SamplingParams) -> None:
        if not prompt_ids:
            raise BadRequest("the prompt is empty")
        bad = [t for t in prompt_ids if not 0 <= t < self.config.vocab_size]
        if bad:
            raise BadRequest(f"token id {bad[0]} is outside the vocabulary (size {self.config.vocab_size})")
        limit = self.config.max_position_embeddings
        if len(prompt_ids) + params.max_new_tokens > limit:
            raise PromptTooLong(f"prompt ({len(prompt_ids)} tokens) plus max_new_tokens "
                                f"({params.max_new_tokens}) exceeds the model's context of {limit}")

    @torch.inference_mode()
    def _loop(self, ids: list[int], params: SamplingParams,
              media: Sequence[MediaInput], attribution: bool, tenant: str) -> Generator[TokenEvent, None, Completion]:
        start = time.perf_counter()
        self.kv_peak = {}
        keys = self._keys(ids, media, tenant)
        kv = self.new_sequence(keys)
        if attribution:
            kv.track_attention(len(ids))
        try:
            positions = self.rope_positions(ids, media, params.max_new_tokens)  # checks the media too
            cached = self.restore_prefix(kv, keys, len(ids))
            logits = self.prefill(kv, ids, media, start=cached, after_chunk=lambda: self._after_chunk(kv, keys),
                                  positions=positions)
            ttft = time.perf_counter() - start
            sampler, text = Sampler(params), StreamDecoder(self.tokenizer)
            out: list[int] = []
            finish = "length"
            t_decode = time.perf_counter()
            while len(out) < params.max_new_tokens:
                token = sampler(logits[-1])
                if token in self.config.eos_token_ids and not params.ignore_eos:
                    finish = "stop"
                    break
                out.append(token)
                delta = text.feed(token)
                if self._hit_stop(text.text, params.stop):
                    finish = "stop"
                    break
                yield TokenEvent(token, delta)
                if len(out) < params.max_new_tokens:
                    logits = self.decode_step(kv, token, positions)
            decode_s = time.perf_counter() - t_decode
            self.after_generation(kv, ids + out, media, tenant, keys)
        finally:
            kv.release()
        return Completion(
            token_ids=out, text=_cut_at_stop(text.text, params.stop), finish_reason=finish,
            prompt_tokens=len(ids), cached_tokens=cached, completion_tokens=len(out), ttft_s=ttft,
            decode_tokens_per_s=(len(out) - 1) / decode_s if len(out) > 1 and decode_s > 0 else 0.0,
            total_s=time.perf_counter() - start, attention=kv.attention_mass,
            extra={"kv_peak_bytes": dict(self.kv_peak), **self._sparse_stats(kv)})

    @staticmethod
    def _hit_stop(text: str, stops: Sequence[str]) -> bool:
        return any(s and s in text for s in stops)

    def prefill(self, kv: KVCache, ids: list[int], media: Sequence[MediaInput] = (),
                start: int = 0, after_chunk: Callable[[], None] | None = None,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        """Run positions start..len(ids) through the model in chunks; logits of the last position.

        `positions` is the request's table from `rope_positions` (None: position = index)."""
        feed = self._media_feed(ids, media, start)
        chunk = self.options.prefill_chunk
        logits = torch.empty(0)
        for lo in range(start, len(ids), chunk):
            hi = min(lo + chunk, len(ids))
            logits = self._forward(kv, ids[lo:hi], lo, feed(lo, hi), positions)
            if after_chunk is not None:
                after_chunk()
        return logits

    def decode_step(self, kv: KVCache, token: int, positions: torch.Tensor | None = None) -> torch.Tensor:
        return self._forward(kv, [token], kv.length, None, positions)

    def rope_positions(self, ids: list[int], media: Sequence[MediaInput], new_tokens: int) -> torch.Tensor | None:
        """The model's positions for this request when they are not simply the indices (M-RoPE)."""
        hook = getattr(self.model, "rope_positions", None)
        return None if hook is None else hook(ids, media, len(ids) + new_tokens)

    def _media_feed(self, ids: list[int], media: Sequence[MediaInput],
                    start: int) -> Callable[[int, int], tuple[torch.Tensor, torch.Tensor] | None]:
        """(lo, hi) -> the media rows of that chunk; families with a vision tower supply their own."""
        hook = getattr(self.model, "media_feed", None)
        if hook is not None:
            return hook(ids, media, start)  # type: ignore[no-any-return]
        rows, patches = _patch_rows(ids, media, self.config)
        return lambda lo, hi: _chunk_media(rows, patches, lo, hi)

    def _forward(self, kv: KVCache, ids: list[int], pos: int, media: tuple[torch.Tensor, torch.Tensor] | None,
                 positions: torch.Tensor | None = None) -> torch.Tensor:
        kv.begin(len(ids))
        if media is not None and self.device.type != "cpu":
            media = (media[0].to(self.device), media[1].to(self.device))
        try:
            where = (torch.arange(pos, pos + len(ids)) if positions is None
                     else positions[..., pos:pos + len(ids)]).to(self.device)
            logits = self.model(torch.tensor(ids, dtype=torch.long, device=self.device), where, kv, media)
        except BaseException:
            kv.rollback()
            raise
        kv.commit()
        self._track_peak(kv)
        return logits.cpu()  # sampling and the callers work on host logits (a no-op on the CPU)

    # -- sparse attention and the resident KV -------------------------------------------------
    def new_sequence(self, keys: SequenceKeys | None = None) -> KVCache:
        """An empty KV cache for one sequence: sparse when a budget is set, able to let go of
        pages when the prefix cache has a persistent tier to bring them back from."""
        limit = self.config.max_position_embeddings
        if self.policy is None:
            return KVCache(self.pool, limit)
        source = self.cache.source(keys) if self.cache is not None and keys is not None else None
        return SparseKVCache(self.pool, limit, self.policy, source)

    def _after_chunk(self, kv: KVCache, keys: SequenceKeys | None) -> None:
        self._save(kv, keys)
        if isinstance(kv, SparseKVCache):
            kv.trim()  # after _save: only keyed (persistable) pages are let go

    def _track_peak(self, kv: KVCache) -> None:
        now = {"device": self._device_bytes()}
        if self.store is not None:
            now["host"] = int(self.store.host.stats()["bytes"])
        if isinstance(kv, SparseKVCache):
            now["summaries"] = kv.summaries.nbytes
        for tier, nbytes in now.items():
            self.kv_peak[tier] = max(self.kv_peak.get(tier, 0), nbytes)

    @staticmethod
    def _sparse_stats(kv: KVCache) -> dict[str, Any]:
        if not isinstance(kv, SparseKVCache):
            return {}
        # fetched: pages taken back for attention (from the pool's cache or a tier); loaded: from a tier
        return {"attention_budget": kv.policy.budget, "fetched_pages": kv.fetched_pages,
                "loaded_pages": int(getattr(kv.source, "loaded", 0)),
                "loaded_layers": int(getattr(kv.source, "loaded_layers", 0))}

    def _device_bytes(self) -> int:
        """The device tier in use: pool pages, and the layer cache's slots."""
        return self.pool.resident_bytes + (self.cache.layers.nbytes if self.cache is not None else 0)

    # -- seams for the prefix cache (kvstore) -------------------------------------------------
    def kv_stats(self) -> dict[str, int]:
        """Resident KV bytes by tier."""
        out = {"device": self._device_bytes()}
        if self.store is not None:
            stats = self.store.stats()
            out["host"] = int(stats.get("host", {}).get("bytes", 0))
            if "lmdb" in stats:
                out["disk"] = int(stats["lmdb"].get("bytes", 0))
        return out

    def _keys(self, ids: list[int], media: Sequence[MediaInput], tenant: str) -> SequenceKeys | None:
        if self.cache is None:
            return None
        spans = [(m.start, m.length, bytes(m.media_hash)) for m in media]
        return self.cache.keys_for(ids, spans, tenant)

    def _save(self, kv: KVCache, keys: SequenceKeys | None) -> None:
        if self.cache is not None and keys is not None:
            self.cache.save(kv, keys)

    def restore_prefix(self, kv: KVCache, keys: SequenceKeys | None, prompt_len: int) -> int:
        """Adopt the cached full pages of this prompt's prefix; returns positions restored.

        At least the last prompt token is always recomputed: its logits start the answer.
        """
        if self.cache is None or keys is None:
            return 0
        return self.cache.restore(kv, keys, (prompt_len - 1) // self.layout.page_size)

    def after_generation(self, kv: KVCache, ids: list[int], media: Sequence[MediaInput], tenant: str,
                         keys: SequenceKeys | None) -> None:
        """Hand the full pages holding the answer to the cache too (a follow-up turn reuses them)."""
        if keys is None:
            return
        full = self._keys(ids, media, tenant)
        assert full is not None
        full.stored = keys.stored
        self._save(kv, full)


def _patch_rows(ids: list[int], media: Sequence[MediaInput],
                cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of every <|patch|> covered by `media`, and their patch vectors, in order."""
    if not media:
        return torch.empty(0, dtype=torch.long), torch.empty(0)
    patch_id = cfg.special_token_ids.get("image_patch_token_id")
    if patch_id is None:
        raise ConfigError(f"model_type '{cfg.model_type}' takes no image or video input")
    all_rows, all_patches = [], []
    for item in media:
        span = torch.tensor(ids[item.start:item.start + item.length])
        rows = torch.nonzero(span == patch_id).flatten() + item.start
        patches = torch.as_tensor(item.patches, dtype=torch.float32)
        if rows.numel() != patches.shape[0]:
            raise BadRequest(f"a media span at {item.start} has {rows.numel()} <|patch|> tokens but "
                             f"{patches.shape[0]} patches")
        all_rows.append(rows)
        all_patches.append(patches)
    return torch.cat(all_rows), torch.cat(all_patches)


def _chunk_media(rows: torch.Tensor, patches: torch.Tensor, lo: int,
                 hi: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    if not rows.numel():
        return None
    keep = (rows >= lo) & (rows < hi)
    if not bool(keep.any()):
        return None
    return rows[keep] - lo, patches[keep]


def _cut_at_stop(text: str, stops: Sequence[str]) -> str:
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return text if cut < 0 else text[:cut]
