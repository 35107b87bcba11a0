"""Qwen2.5-VL fed by ingest: a folder with notes, an image and a video becomes one prompt whose
media went through the model's image processor, and the engine answers it as transformers does."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ingest import IngestOptions, Target, build_prompt
from runtime import Engine, SamplingParams
from strata.ask import ask, question_ids
from tests.ingest.helpers import video_bytes
from tests.runtime.qwen2_5_vl_tiny import IMAGE_PAD, VIDEO_PAD, VISION_END, VISION_START, write_tiny_qwen2_5_vl

GREEDY = 16


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen2_5_vl_ingest")
    ref = write_tiny_qwen2_5_vl(root / "model")
    docs = root / "docs"
    docs.mkdir()
    (docs / "notes.md").write_text("# Field notes\nThe picture and the clip were taken on the same day.\n")
    pixels = np.random.default_rng(3).integers(0, 256, (30, 45, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(docs / "picture.png")
    (docs / "clip.mp4").write_bytes(video_bytes(seconds=2.0, fps=4, size=(32, 24)))
    target = Target.from_model_dir(root / "model")
    opts = IngestOptions(cache_dir=root / "extracts", video_fps=2.0)
    prompt = build_prompt([docs], target, options=opts)
    engine = Engine.from_pretrained(root / "model", weights="fp32", kv_dtype="fp32", page_size=8,
                                    prefill_chunk=16, cache=False)
    return ref, engine, target, prompt


def reference_inputs(ids: list[int], media: list) -> dict:
    """transformers' inputs for the same prompt: pixel values and grids straight from the spans."""
    images = [m for m in media if m.kind != "video"]
    videos = [m for m in media if m.kind == "video"]
    kinds = [1 if t == IMAGE_PAD else 2 if t == VIDEO_PAD else 0 for t in ids]
    return dict(input_ids=torch.tensor([ids]), mm_token_type_ids=torch.tensor([kinds]),
                pixel_values=torch.from_numpy(np.concatenate([m.patches for m in images])),
                image_grid_thw=torch.tensor([m.grid_thw for m in images]),
                pixel_values_videos=torch.from_numpy(np.concatenate([m.patches for m in videos])),
                video_grid_thw=torch.tensor([m.grid_thw for m in videos]),
                second_per_grid_ts=torch.tensor([m.second_per_grid for m in videos]))


def test_ingest_lays_out_qwen_vision_runs(setup) -> None:
    _, _, target, prompt = setup
    assert target.qwen_vl and target.video
    kinds = sorted(m.kind for m in prompt.media)
    assert kinds == ["image", "video"]
    for m in prompt.media:
        pad = VIDEO_PAD if m.kind == "video" else IMAGE_PAD
        assert prompt.token_ids[m.start - 1] == VISION_START and prompt.token_ids[m.start + m.length] == VISION_END
        assert set(prompt.token_ids[m.start:m.start + m.length]) == {pad}
        t, h, w = m.grid_thw
        assert m.length == t * h * w // 4 and m.patches.shape == (t * h * w, 3 * 2 * 4 * 4)
    video = next(m for m in prompt.media if m.kind == "video")
    assert video.grid_thw[0] == 2 and video.second_per_grid == pytest.approx(1.0)  # 4 frames at 2 fps
    moments = [prompt.cite(video.start + i, video.start + i + 1)[0].time_s for i in (0, video.length - 1)]
    assert moments == pytest.approx([0.0, 1.0], abs=0.11)  # each temporal patch cites its first frame


def test_answer_matches_transformers(setup) -> None:
    ref, engine, _, prompt = setup
    question = "What do the picture and the clip show?"
    ids = question_ids(engine, prompt, question)
    with torch.inference_mode():
        out = ref.generate(**reference_inputs(ids, prompt.media), max_new_tokens=GREEDY, min_new_tokens=GREEDY,
                           do_sample=False, pad_token_id=0, eos_token_id=None)
    want = out[0, len(ids):].tolist()
    got = ask(engine, prompt, question, SamplingParams(max_new_tokens=GREEDY, ignore_eos=True))
    direct = engine.run(ids, SamplingParams(max_new_tokens=GREEDY, ignore_eos=True), prompt.media)
    assert direct.token_ids == want
    assert got.answer == direct.text and got.completion_tokens == GREEDY
