"""`strata ask --model DIR SOURCE... -q QUESTION [--json]`: ingest, reuse the cached prefix, answer."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from strata.cli import emit_json

MAX_BUDGET = 1_000_000
QUESTION_ROOM = 512  # tokens kept free after the material for the framed question


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ask", help="ask a question about repositories, PDFs, images and videos")
    p.add_argument("--model", type=Path, required=True, help="checkpoint directory")
    p.add_argument("sources", nargs="+", metavar="SOURCE")
    p.add_argument("-q", "--question", required=True)
    p.add_argument("--budget", type=int, default=None,
                   help="token budget for the material (default: the model's context, up to 1,000,000)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--weights", choices=("auto", "fp8", "bf16", "fp32"), default="auto")
    p.add_argument("--citations", type=int, default=5, help="how many sources to cite")
    p.add_argument("--no-cache", action="store_true", help="neither reuse nor store cached KV pages")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=ask_command)


def material_budget(context: int, max_new_tokens: int, requested: int | None) -> int:
    """What the material may use: the context less room for the question and the answer."""
    room = min(context, MAX_BUDGET) - max_new_tokens - QUESTION_ROOM
    return room if requested is None else min(requested, room)


def ask_command(args: argparse.Namespace) -> int:
    from ingest import Target, build_prompt
    from runtime import Engine, SamplingParams
    from strata.ask import ask_stream

    engine = Engine.from_pretrained(args.model, weights=args.weights, cache=False if args.no_cache else None)
    target = Target.from_model_dir(args.model)
    budget = material_budget(engine.config.max_position_embeddings, args.max_new_tokens, args.budget)
    prompt = build_prompt(args.sources, target, budget, progress=not args.json and sys.stderr.isatty())
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed)
    stream = ask_stream(engine, prompt, args.question, params, args.citations)
    for delta in stream:
        if not args.json:
            sys.stdout.write(delta)
            sys.stdout.flush()
    result = stream.result
    assert result is not None
    if args.json:
        body = result.to_dict()
        emit_json({"answer": body["answer"], "citations": body["citations"],
                   "prompt_tokens": result.prompt_tokens, "cached_tokens": result.cached_tokens,
                   "completion_tokens": result.completion_tokens, "ttft_s": round(result.ttft_s, 6),
                   "decode_tokens_per_s": round(result.decode_tokens_per_s, 3),
                   "prompt_digest": prompt.digest(), "ledger": prompt.summary(), **result.extra})
        return 0
    print("\n\nSources:")
    for c in result.citations:
        print(f"  {c.label}  ({c.score:.1%} of attention)")
    print(f"[{result.prompt_tokens} prompt tokens, {result.cached_tokens} cached, "
          f"ttft {result.ttft_s:.2f}s, {result.decode_tokens_per_s:.1f} tok/s]")
    return 0
