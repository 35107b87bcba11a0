"""Qwen2.5-VL against transformers' own implementation on a seeded random tiny config.

The prompt holds text, an image and a 4-frame video; prefill chunks of 16 and pages of 8 cut
through both media runs on purpose.
"""

from __future__ import annotations

import pytest
import torch

from runtime import Engine, SamplingParams
from runtime.kv import KVCache
from strata.errors import BadRequest
from tests.runtime.qwen2_5_vl_tiny import (
    MixedPrompt,
    build_tokenizer,
    mixed_prompt,
    random_pixels,
    write_tiny_qwen2_5_vl,
)

GREEDY = 32


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen2_5_vl")
    ref = write_tiny_qwen2_5_vl(path)
    engine = Engine.from_pretrained(path, weights="fp32", kv_dtype="fp32", page_size=8, prefill_chunk=16,
                                    cache=False)
    prompt = mixed_prompt(build_tokenizer(), random_pixels(30, 45, seed=1), random_pixels(20, 20, seed=2, frames=4))
    return ref, engine, prompt


def engine_logits(engine: Engine, prompt: MixedPrompt, step: int = 7) -> torch.Tensor:
    """All prompt logits, run in uneven chunks through the model with the engine's own seams."""
    model = engine.model
    positions = engine.rope_positions(prompt.ids, prompt.media, 0)
    feed = model.media_feed(prompt.ids, prompt.media, 0)
    kv = KVCache(engine.pool, engine.config.max_position_embeddings)
    rows = []
    try:
        for lo in range(0, len(prompt.ids), step):
            hi = min(lo + step, len(prompt.ids))
            kv.begin(hi - lo)
            rows.append(model(torch.tensor(prompt.ids[lo:hi]), positions[:, lo:hi], kv, feed(lo, hi),
                              all_logits=True))
            kv.commit()
    finally:
        kv.release()
    return torch.cat(rows)


def test_prompt_logits_match_transformers(setup) -> None:
    ref, engine, prompt = setup
    assert prompt.image.grid_thw[0] == 1 and prompt.video.grid_thw[0] == 2  # 4 frames -> 2 temporal patches
    with torch.inference_mode():
        want = ref(**prompt.reference_inputs()).logits[0]
        got = engine_logits(engine, prompt)
    diff = (got - want).abs().max().item()
    assert diff <= 1e-4, f"max |logit diff| {diff:.2e}"


@pytest.mark.parametrize("fps", [2.0, 3.0, 0.5])  # video time steps of 2, 1.33 (truncated) and 8 positions
def test_positions_match_get_rope_index(setup, fps: float) -> None:
    ref, engine, _ = setup
    prompt = mixed_prompt(build_tokenizer(), random_pixels(30, 45, seed=1), random_pixels(20, 20, seed=2, frames=4),
                          fps=fps)
    inputs = prompt.reference_inputs()
    want, delta = ref.model.get_rope_index(inputs["input_ids"], inputs["mm_token_type_ids"], inputs["image_grid_thw"],
                                           inputs["video_grid_thw"], inputs["second_per_grid_ts"])
    got = engine.rope_positions(prompt.ids, prompt.media, 5)
    n = len(prompt.ids)
    assert torch.equal(got[:, :n], want[:, 0])
    assert torch.equal(got[:, n:], (torch.arange(n, n + 5) + int(delta)).expand(3, -1))
    assert not torch.equal(got[0, :n], got[1, :n])  # the media really take 3D positions


def test_greedy_matches_transformers_generate(setup) -> None:
    ref, engine, prompt = setup
    with torch.inference_mode():
        out = ref.generate(**prompt.reference_inputs(), max_new_tokens=GREEDY, min_new_tokens=GREEDY,
                           do_sample=False, pad_token_id=0, eos_token_id=None)
    want = out[0, len(prompt.ids):].tolist()
    got = engine.run(prompt.ids, SamplingParams(max_new_tokens=GREEDY, ignore_eos=True), prompt.media).token_ids
    assert got == want


def test_media_change_the_answer(setup) -> None:
    """A different image (same ids) changes the logits: the vision tower's rows really enter."""
    _, engine, prompt = setup
    other = mixed_prompt(build_tokenizer(), random_pixels(30, 45, seed=7), random_pixels(20, 20, seed=2, frames=4))
    assert other.ids == prompt.ids
    with torch.inference_mode():
        diff = (engine_logits(engine, prompt, 16) - engine_logits(engine, other, 16)).abs().max().item()
    assert diff > 1e-3


def test_bad_media_are_refused(setup) -> None:
    _, engine, prompt = setup
    params = SamplingParams(max_new_tokens=1)
    with pytest.raises(BadRequest, match="placeholder tokens but media for"):
        engine.run(prompt.ids, params, prompt.media[:1])
    shifted = [prompt.media[0], type(prompt.media[1])(**{**_fields(prompt.media[1]), "start": 3})]
    with pytest.raises(BadRequest, match="must cover a run of <\\|video_pad\\|> tokens"):
        engine.run(prompt.ids, params, shifted)


def _fields(item: object) -> dict:
    return {name: getattr(item, name) for name in item.__slots__}  # type: ignore[attr-defined]



def test_fp8_weights_leave_the_vision_tower_in_float(tmp_path) -> None:
    """Quantising on load covers the language model, not the vision tower (see loader.quantizable)."""
    from runtime.fp8 import FP8Linear

    write_tiny_qwen2_5_vl(tmp_path)
    engine = Engine.from_pretrained(tmp_path, weights="fp8", cache=False)
    linears = [(name, m) for name, m in engine.model.named_modules() if isinstance(m, torch.nn.Linear | FP8Linear)]
    vision = [m for name, m in linears if name.startswith("visual.")]
    language = [m for name, m in linears if name.startswith("model.layers.")]
    assert vision and all(not isinstance(m, FP8Linear) for m in vision)
    assert language and all(isinstance(m, FP8Linear) for m in language)
