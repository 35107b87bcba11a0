"""Fixtures for ingest tests: a small byte-level BPE tokenizer with the MODEL1 special tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from ingest.options import IngestOptions
from ingest.target import Target

SPECIALS = [
    "<|bos|>",
    "<|eos|>",
    "<|pad|>",
    "<|image|>",
    "<|/image|>",
    "<|patch|>",
    "<|row|>",
    "<|video|>",
    "<|/video|>",
]

_CORPUS = [
    'def main(argv):\n    return run(argv)\n\nclass Config:\n    """Settings."""\n',
    "function add(a, b) {\n  return a + b;\n}\nconst x = require('x');\n",
    'package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println("hi")\n}\n',
    "The quick brown fox jumps over the lazy dog. Page one of the report.\n",
    '<file path="src/a.py">\n</file>\n<tree root="repo">\n<pdf pages="2"><page n="1">\n',
    't=0.00s\nt=1.00s\n<image path="x.png">\n</image>\n<video duration="3.00s">\n',
]


def make_tokenizer() -> Tokenizer:
    """Deterministic: the same corpus and settings train the same merges."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=SPECIALS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([line for _ in range(20) for line in _CORPUS], trainer)
    return tok


def _config(tok: Tokenizer, vision: bool) -> dict:
    ids = {name: tok.token_to_id(s) for name, s in [("bos_token_id", "<|bos|>"), ("eos_token_id", "<|eos|>")]}
    if vision:
        ids.update(
            {
                name: tok.token_to_id(s)
                for name, s in [
                    ("image_start_token_id", "<|image|>"),
                    ("image_end_token_id", "<|/image|>"),
                    ("image_patch_token_id", "<|patch|>"),
                    ("image_row_token_id", "<|row|>"),
                    ("video_start_token_id", "<|video|>"),
                    ("video_end_token_id", "<|/video|>"),
                ]
            }
        )
        ids.update(patch_size=16, num_channels=3, min_image_pixels=32 * 32, max_image_pixels=256 * 256)
    return {"model_type": "strata_model1" if vision else "llama", "max_position_embeddings": 65536, **ids}


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory (config.json + tokenizer.json) for a vision target."""
    import json

    d = tmp_path_factory.mktemp("model1")
    tok = make_tokenizer()
    tok.save(str(d / "tokenizer.json"))
    (d / "config.json").write_text(json.dumps(_config(tok, vision=True)))
    return d


@pytest.fixture(scope="session")
def text_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import json

    d = tmp_path_factory.mktemp("textmodel")
    tok = make_tokenizer()
    tok.save(str(d / "tokenizer.json"))
    (d / "config.json").write_text(json.dumps(_config(tok, vision=False)))
    return d


@pytest.fixture()
def target(model_dir: Path) -> Target:
    return Target.from_model_dir(model_dir)


@pytest.fixture()
def text_target(text_model_dir: Path) -> Target:
    return Target.from_model_dir(text_model_dir)


@pytest.fixture()
def opts(tmp_path: Path) -> IngestOptions:
    """Options with a private cache dir (build_prompt writes nowhere else)."""
    return IngestOptions(cache_dir=tmp_path / "extracts")
