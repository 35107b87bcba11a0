"""Bad checkpoints and prompts: a clear StrataError naming what is wrong, never a torch traceback."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file, save_file

from runtime import Engine, SamplingParams
from strata.cli import main
from strata.errors import BadRequest, CheckpointError, ConfigError, PromptTooLong
from tests.runtime.model1_tiny import write_tiny_model1


@pytest.fixture()
def model_dir(tmp_path):
    return write_tiny_model1(tmp_path / "m")


def edit_config(path, **changes) -> None:
    raw = json.loads((path / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    (path / "config.json").write_text(json.dumps(raw))


def test_missing_config_field(model_dir) -> None:
    edit_config(model_dir, hidden_size=None)
    with pytest.raises(ConfigError, match="'hidden_size'"):
        Engine.from_pretrained(model_dir)


def test_unknown_model_type(model_dir) -> None:
    edit_config(model_dir, model_type="gpt_neox")
    with pytest.raises(ConfigError, match="unknown model_type 'gpt_neox'"):
        Engine.from_pretrained(model_dir)


def test_unsupported_rope(model_dir) -> None:
    edit_config(model_dir, rope_scaling={"rope_type": "longrope", "factor": 4.0})
    with pytest.raises(ConfigError, match="rope type 'longrope'"):
        Engine.from_pretrained(model_dir)


def test_missing_tensor(model_dir) -> None:
    state = load_file(str(model_dir / "model.safetensors"))
    del state["model.layers.2.self_attn.k_proj.weight"]
    save_file(state, str(model_dir / "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing the tensor 'model.layers.2.self_attn.k_proj.weight'"):
        Engine.from_pretrained(model_dir)


def test_shape_mismatch(model_dir) -> None:
    state = load_file(str(model_dir / "model.safetensors"))
    state["model.norm.weight"] = state["model.norm.weight"][:10].clone()
    save_file(state, str(model_dir / "model.safetensors"))
    with pytest.raises(CheckpointError, match="'model.norm.weight' has shape \\(10,\\)"):
        Engine.from_pretrained(model_dir)


def test_unexpected_tensor(model_dir) -> None:
    state = load_file(str(model_dir / "model.safetensors"))
    state["model.layers.0.self_attn.q_norm.weight"] = state["model.norm.weight"][:16].clone()
    save_file(state, str(model_dir / "model.safetensors"))
    with pytest.raises(CheckpointError, match="q_norm"):
        Engine.from_pretrained(model_dir)


def test_prompt_longer_than_context(model_dir) -> None:
    edit_config(model_dir, max_position_embeddings=64)
    engine = Engine.from_pretrained(model_dir)
    with pytest.raises(PromptTooLong, match="exceeds the model's context of 64"):
        engine.generate(list(range(10, 70)), 8)
    with pytest.raises(BadRequest, match="outside the vocabulary"):
        engine.generate([10**7], 1)
    with pytest.raises(BadRequest, match="empty"):
        engine.generate([], 1)


def test_cli_reports_errors_cleanly(model_dir, capsys) -> None:
    edit_config(model_dir, model_type="nope")
    assert main(["generate", "--model", str(model_dir), "--prompt", "x", "--json"]) == 2
    out = json.loads(capsys.readouterr().out)
    assert out["error"]["type"] == "config_error" and "nope" in out["error"]["message"]


def test_sampling_and_stops(model_dir) -> None:
    engine = Engine.from_pretrained(model_dir)
    ids = engine.encode("sampling is seeded")
    a = engine.run(ids, SamplingParams(max_new_tokens=12, temperature=1.0, top_p=0.9, seed=7))
    b = engine.run(ids, SamplingParams(max_new_tokens=12, temperature=1.0, top_p=0.9, seed=7))
    assert a.token_ids == b.token_ids
    greedy = engine.run(ids, SamplingParams(max_new_tokens=12))
    gen = engine.stream(ids, SamplingParams(max_new_tokens=12))
    streamed = [e.token for e in gen]
    assert streamed == greedy.token_ids == gen.result.token_ids
    text = greedy.text
    if len(text) > 4:
        stop = text[2:4]
        stopped = engine.run(ids, SamplingParams(max_new_tokens=12, stop=(stop,)))
        assert stopped.finish_reason == "stop" and stop not in stopped.text
    eos = engine.config.eos_token_ids[0]
    assert eos not in greedy.token_ids
