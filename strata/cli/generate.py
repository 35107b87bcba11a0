"""`strata demo-model` and `strata generate`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from strata.cli import emit_json
from strata.errors import BadRequest


def register(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo-model", help="write a MODEL1 checkpoint with seeded random weights")
    demo.add_argument("dir", type=Path)
    demo.add_argument("--weights", choices=("fp8", "bf16", "fp32"), default="fp8")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--json", action="store_true")
    demo.set_defaults(handler=demo_model)

    gen = sub.add_parser("generate", help="generate text from a checkpoint")
    gen.add_argument("--model", type=Path, required=True, help="checkpoint directory")
    source = gen.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt")
    source.add_argument("--prompt-file", type=Path)
    gen.add_argument("--max-new-tokens", type=int, default=64)
    gen.add_argument("--weights", choices=("auto", "fp8", "bf16", "fp32"), default="auto")
    gen.add_argument("--kv-dtype", choices=("auto", "fp8", "bf16", "fp32"), default=None)
    gen.add_argument("--temperature", type=float, default=0.0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--top-k", type=int, default=0)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    gen.add_argument("--no-cache", action="store_true", help="neither reuse nor store cached KV pages")
    gen.add_argument("--attention-budget", type=int, default=None, metavar="TOKENS",
                     help="sparse attention: tokens of selected pages per query (0 = dense; "
                          "default STRATA_ATTENTION_BUDGET)")
    gen.add_argument("--device", default="cpu", help="cpu or cuda[:N] (weights, page pool, activations)")
    gen.add_argument("--json", action="store_true", help="print one JSON object")
    gen.set_defaults(handler=generate)


def demo_model(args: argparse.Namespace) -> int:
    from runtime.config import ModelConfig
    from runtime.demo import parameter_counts, write_demo_model

    path = write_demo_model(args.dir, weights=args.weights, seed=args.seed)
    total, active = parameter_counts(ModelConfig.from_file(path))
    info = {"path": str(path), "weights": args.weights, "parameters": total, "active_parameters": active,
            "bytes_on_disk": (path / "model.safetensors").stat().st_size}
    if args.json:
        emit_json(info)
    else:
        print(f"wrote {path}: {total / 1e6:.1f}M parameters ({active / 1e6:.1f}M active), {args.weights}, "
              f"random weights (see {path / 'README.md'})")
    return 0


def generate(args: argparse.Namespace) -> int:
    from runtime import Engine, SamplingParams

    if args.prompt_file is not None:
        try:
            prompt = args.prompt_file.read_text(errors="replace")
        except OSError as exc:
            raise BadRequest(f"cannot read --prompt-file {args.prompt_file}: {exc.strerror}") from exc
    else:
        prompt = args.prompt
    if args.attention_budget is not None and args.attention_budget < 0:
        raise BadRequest("--attention-budget must not be negative")
    engine = Engine.from_pretrained(args.model, device=args.device, weights=args.weights, kv_dtype=args.kv_dtype,
                                    cache=False if args.no_cache else None,
                                    attention_budget=args.attention_budget)
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                            top_p=args.top_p, top_k=args.top_k, seed=args.seed, stop=tuple(args.stop))
    gen = engine.stream(engine.encode(prompt), params)
    for event in gen:
        if not args.json:
            sys.stdout.write(event.text)
            sys.stdout.flush()
    result = gen.result
    assert result is not None
    if args.json:
        emit_json({"text": result.text, "token_ids": result.token_ids, "finish_reason": result.finish_reason,
                   "prompt_tokens": result.prompt_tokens, "cached_tokens": result.cached_tokens,
                   "completion_tokens": result.completion_tokens, "ttft_s": round(result.ttft_s, 6),
                   "decode_tokens_per_s": round(result.decode_tokens_per_s, 3),
                   "weights": engine.weights, "kv_dtype": engine.layout.storage,
                   "kv_bytes": engine.kv_stats(), **result.extra})
    else:
        sys.stdout.write("\n")
    return 0
