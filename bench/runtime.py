"""The runtime against transformers, and FP8 against bf16 weights, side by side in one process.

Run:  .venv/bin/python bench/runtime.py            (2K: 3 rounds, 8K: 2 rounds, fp32 rows)
      .venv/bin/python bench/runtime.py --quick    (fewer rounds, no fp32 rows)

Part 1 saves a seeded random Llama checkpoint (hidden 1024, 8 layers, 16 heads, 4 KV heads,
intermediate 2816, vocab 32000: 156M parameters) with save_pretrained and loads it in Strata and in
transformers (AutoModelForCausalLM, attn_implementation="sdpa", same dtype). Prefill tokens/s:
Strata `engine.run(prompt, max_new_tokens=1)` -> prompt / ttft_s; transformers one forward over the
prompt with use_cache=True and logits_to_keep=1 (what generate() does: no logits for every prompt
position). Decode tokens/s at 8K context: Strata `Completion.decode_tokens_per_s` over 32 decode
steps; transformers 32 steps of a manual greedy loop over its DynamicCache (no generate() overhead).

Part 2 writes the demo MODEL1 checkpoint (runtime.demo.write_demo_model, what `strata demo-model`
runs) in fp32, bf16 and fp8, loads the fp32 one with weights="bf16" and weights="fp8" (quantised on
load) and compares logits, greedy tokens, decode speed and weight bytes on 512-token prompts of
this repository's own text. The same comparison of bf16 against fp32 weights shows how much of the
disagreement any rounding causes on this random-weight model (its top-1 margins are tiny).

Every timed pair runs in interleaved rounds (A, B, then B, A, ...), each round on a fresh random
prompt, and the median is kept: the 2 shared cores make single timings unreliable. The prefix
cache is switched off (STRATA_CACHE=0): these are cold-prompt numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ["STRATA_CACHE"] = "0"  # cold prompts only: no prefix hits, no write-through on prefill

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402
import transformers  # noqa: E402

transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime import Engine, SamplingParams  # noqa: E402
from runtime.demo import write_demo_model  # noqa: E402
from runtime.fp8 import kernel_isa, weight_nbytes  # noqa: E402
from runtime.kv import KVCache  # noqa: E402

LLAMA = dict(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=8,
             num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=16384,
             tie_word_embeddings=False, rope_theta=500000.0)
DECODE_STEPS = 32
FP8_PROMPT = 512
FP8_STEPS = 64
TEXT_FILES = ("README.md", "runtime/kv.py", "runtime/engine.py", "runtime/fp8.py")


# -- helpers ----------------------------------------------------------------------------------

def rounds(pair: dict[str, Callable[[int], dict[str, float]]], n: int) -> dict[str, dict[str, float]]:
    """Run both variants n times, alternating which goes first; median of every reported metric."""
    names = list(pair)
    got: dict[str, dict[str, list[float]]] = {k: {} for k in names}
    for r in range(n):
        for name in names if r % 2 == 0 else names[::-1]:
            for metric, value in pair[name](r).items():
                got[name].setdefault(metric, []).append(value)
    return {k: {m: statistics.median(v) for m, v in ms.items()} for k, ms in got.items()}


def random_prompt(n: int, vocab: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (n,), generator=g).tolist()


def forward(engine: Engine, kv: KVCache, ids: list[int], all_logits: bool = False) -> torch.Tensor:
    """One pass of the engine's model over `ids` at the next positions of `kv`; float32 logits."""
    pos = kv.length
    kv.begin(len(ids))
    logits = engine.model(torch.tensor(ids), torch.arange(pos, pos + len(ids)), kv, None,
                          all_logits=all_logits)
    kv.commit()
    return logits


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def goal(ok: bool) -> str:
    return "met" if ok else "NOT met"


# -- part 1: Strata vs transformers -----------------------------------------------------------

class Pair:
    """One checkpoint loaded in Strata and in transformers in the same dtype."""

    def __init__(self, path: Path, dtype: torch.dtype) -> None:
        self.dtype = dtype
        name = "bf16" if dtype == torch.bfloat16 else "fp32"
        self.engine = Engine.from_pretrained(path, weights=name)
        self.hf = transformers.AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, attn_implementation="sdpa").eval()
        self.vocab = self.engine.config.vocab_size

    def max_logit_diff(self, n: int = 64) -> tuple[float, float]:
        """Same model? Max |logit diff| and top-1 agreement over an n-token prompt."""
        ids = random_prompt(n, self.vocab, seed=7)
        kv = KVCache(self.engine.pool, self.engine.config.max_position_embeddings)
        with torch.inference_mode():
            try:
                ours = forward(self.engine, kv, ids, all_logits=True)
            finally:
                kv.release()
            ref = self.hf(torch.tensor([ids])).logits[0].float()
        agree = (ours.argmax(-1) == ref.argmax(-1)).float().mean().item()
        return (ours - ref).abs().max().item(), agree

    def strata(self, n: int, new_tokens: int) -> Callable[[int], dict[str, float]]:
        def run(r: int) -> dict[str, float]:
            ids = random_prompt(n, self.vocab, seed=1000 + r)
            done = self.engine.run(ids, SamplingParams(max_new_tokens=new_tokens, ignore_eos=True))
            out = {"prefill": n / done.ttft_s}
            if new_tokens > 1:
                out["decode"] = done.decode_tokens_per_s
            return out
        return run

    def reference(self, n: int, new_tokens: int) -> Callable[[int], dict[str, float]]:
        def run(r: int) -> dict[str, float]:
            ids = torch.tensor([random_prompt(n, self.vocab, seed=1000 + r)])
            with torch.inference_mode():
                t0 = time.perf_counter()
                res = self.hf(ids, use_cache=True, logits_to_keep=1)
                out = {"prefill": n / (time.perf_counter() - t0)}
                if new_tokens > 1:
                    cache, token = res.cache, res.logits[:, -1:].argmax(-1)
                    t0 = time.perf_counter()
                    for _ in range(new_tokens - 1):
                        res = self.hf(token, cache=cache, use_cache=True)
                        token = res.logits[:, -1:].argmax(-1)
                    out["decode"] = (new_tokens - 1) / (time.perf_counter() - t0)
            return out
        return run

    def compare(self, n: int, new_tokens: int, n_rounds: int) -> dict[str, dict[str, float]]:
        res = rounds({"strata": self.strata(n, new_tokens), "hf": self.reference(n, new_tokens)}, n_rounds)
        print(f"  {n} tokens, {n_rounds} rounds: " + ", ".join(
            f"{k} {m} {v:.1f} tok/s" for k, ms in res.items() for m, v in ms.items()), flush=True)
        return res

    def warm_up(self) -> None:
        self.compare(256, 3, 1)

    def close(self) -> None:
        del self.engine, self.hf


def part1(tmp: Path, quick: bool) -> None:
    path = tmp / "llama"
    cfg = transformers.LlamaConfig(**LLAMA)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(path)
    del model
    short_rounds, long_rounds = (2, 1) if quick else (3, 2)
    print(f"## Strata vs transformers {transformers.__version__} (sdpa), random Llama "
          f"{params / 1e6:.0f}M params: hidden {cfg.hidden_size}, {cfg.num_hidden_layers} layers, "
          f"{cfg.num_attention_heads} heads / {cfg.num_key_value_heads} KV heads, intermediate "
          f"{cfg.intermediate_size}, vocab {cfg.vocab_size};\nmedians of interleaved rounds (warm-up first)\n",
          flush=True)
    rows = []
    dtypes = [torch.bfloat16] if quick else [torch.bfloat16, torch.float32]
    for dtype in dtypes:
        pair = Pair(path, dtype)
        name = "bf16" if dtype == torch.bfloat16 else "fp32"
        diff, agree = pair.max_logit_diff()
        print(f"{name}: same model check over 64 tokens: max |logit diff| {diff:.3g}, top-1 agreement "
              f"{agree:.1%}", flush=True)
        pair.warm_up()
        short = pair.compare(2048, 1, short_rounds)
        rows.append(_row(name, "prefill tok/s, 2K prompt", short, "prefill"))
        if dtype == torch.bfloat16 or not quick:
            ctx = 8192 if dtype == torch.bfloat16 else 2048
            long = pair.compare(ctx, DECODE_STEPS + 1, long_rounds)
            label = f"{ctx // 1024}K"
            if dtype == torch.bfloat16:
                rows.append(_row(name, f"prefill tok/s, {label} prompt", long, "prefill"))
            rows.append(_row(name, f"decode tok/s at {label} context ({DECODE_STEPS} steps)", long, "decode"))
        pair.close()
        print(flush=True)
    print(table(["dtype", "measure", "Strata", "transformers", "Strata / transformers", "goal >= 1.0x"],
                rows) + "\n", flush=True)


def _row(dtype: str, label: str, res: dict[str, dict[str, float]], metric: str) -> list[str]:
    ours, ref = res["strata"][metric], res["hf"][metric]
    return [dtype, label, f"{ours:.1f}", f"{ref:.1f}", f"{ours / ref:.2f}x", goal(ours / ref >= 1.0)]


# -- part 2: FP8 vs bf16 on the demo model ----------------------------------------------------

def text_prompts(engine: Engine, n: int) -> list[list[int]]:
    prompts = []
    for rel in TEXT_FILES:
        ids = engine.encode((ROOT / rel).read_text())
        if len(ids) >= n:
            prompts.append(ids[:n])
    return prompts


def quality(bf16: Engine, fp8: Engine, prompt: list[int], free: bool = True) -> dict[str, float]:
    """Prompt logits cosine, then FP8_STEPS teacher-forced decode steps on the first engine's greedy
    tokens, then (with `free`) both engines generating on their own."""
    kv_b = KVCache(bf16.pool, bf16.config.max_position_embeddings)
    kv_f = KVCache(fp8.pool, fp8.config.max_position_embeddings)
    try:
        lb, lf = forward(bf16, kv_b, prompt, True), forward(fp8, kv_f, prompt, True)
        cos = torch.nn.functional.cosine_similarity(lb, lf, dim=-1)
        prompt_agree = (lb.argmax(-1) == lf.argmax(-1)).float().mean().item()
        step_agree, step_cos = [], []
        lb, lf = lb[-1:], lf[-1:]
        for _ in range(FP8_STEPS):
            token = int(lb[-1].argmax())
            step_agree.append(float(token == int(lf[-1].argmax())))
            step_cos.append(torch.nn.functional.cosine_similarity(lb[-1], lf[-1], dim=0).item())
            lb, lf = forward(bf16, kv_b, [token]), forward(fp8, kv_f, [token])
    finally:
        kv_b.release()
        kv_f.release()
    out = {"cos_mean": cos.mean().item(), "cos_min": cos.min().item(), "prompt_agree": prompt_agree,
           "tf_agree": statistics.mean(step_agree), "tf_cos_min": min(step_cos)}
    if free:
        free_b, free_f = bf16.generate(prompt, FP8_STEPS), fp8.generate(prompt, FP8_STEPS)
        same = [a == b for a, b in zip(free_b, free_f, strict=True)]
        out["free_agree"] = statistics.mean(same)
        out["free_prefix"] = same.index(False) if False in same else len(same)
    return out


def _quality_row(label: str, q: dict[str, float]) -> list[str]:
    free = [f"{q['free_agree']:.1%}", f"{q['free_prefix']:.0f}/{FP8_STEPS}"] if "free_agree" in q else ["-", "-"]
    return [label, f"{q['cos_mean']:.4f}", f"{q['cos_min']:.4f}", f"{q['prompt_agree']:.1%}",
            f"{q['tf_agree']:.1%}", f"{q['tf_cos_min']:.4f}", *free]


def part2(tmp: Path, quick: bool) -> None:
    dirs = {w: write_demo_model(tmp / f"demo-{w}", w) for w in ("fp32", "bf16", "fp8")}
    fp32 = Engine.from_pretrained(dirs["fp32"], weights="fp32")
    bf16 = Engine.from_pretrained(dirs["fp32"], weights="bf16")
    fp8 = Engine.from_pretrained(dirs["fp32"], weights="fp8")
    print(f"## FP8 vs bf16 weights, demo MODEL1 (MoE, vocab {bf16.config.vocab_size}), all three engines "
          f"from the fp32 checkpoint (fp8: quantised on load); FP8 kernel: {kernel_isa()}\n", flush=True)
    with torch.inference_mode():
        prompts = text_prompts(bf16, FP8_PROMPT)[: 2 if quick else None]
        rows, all_q = [], []
        for rel, prompt in zip(TEXT_FILES, prompts, strict=False):
            q = quality(bf16, fp8, prompt)
            all_q.append(q)
            rows.append(_quality_row(f"fp8 vs bf16, {rel}", q))
        for rel, prompt in zip(TEXT_FILES, prompts, strict=False):
            rows.append(_quality_row(f"(floor) bf16 vs fp32, {rel}", quality(fp32, bf16, prompt, free=False)))
    del fp32
    print(table([f"weights, prompt ({FP8_PROMPT} tokens)", "logits cos mean", "cos min", "prompt top-1",
                 f"teacher-forced top-1 ({FP8_STEPS} steps)", "step cos min", "free-running same token",
                 "identical prefix"], rows) + "\n", flush=True)

    for engine in (bf16, fp8):  # warm-up: the FP8 kernel build/load, first-touch of buffers
        engine.run(random_prompt(64, engine.config.vocab_size, 1), SamplingParams(max_new_tokens=4))
    speed = rounds({"fp8": _demo_run(fp8), "bf16": _demo_run(bf16)}, 3 if quick else 5)
    cos_mean = statistics.mean(q["cos_mean"] for q in all_q)
    tf_agree = statistics.mean(q["tf_agree"] for q in all_q)
    decode = speed["fp8"]["decode"] / speed["bf16"]["decode"]
    prefill = speed["fp8"]["prefill"] / speed["bf16"]["prefill"]
    mem = weight_nbytes(fp8.model) / weight_nbytes(bf16.model)
    disk = (dirs["fp8"] / "model.safetensors").stat().st_size / (dirs["bf16"] / "model.safetensors").stat().st_size
    rows = [
        ["logits cosine (mean over prompt positions)", f"{cos_mean:.4f}", ">= 0.99", goal(cos_mean >= 0.99)],
        ["greedy top-1 agreement, teacher-forced", f"{tf_agree:.1%}", ">= 95%", goal(tf_agree >= 0.95)],
        ["decode tok/s fp8 / bf16", f"{speed['fp8']['decode']:.1f} / {speed['bf16']['decode']:.1f} = "
         f"{decode:.2f}x", ">= 0.67x (within 1.5x)", goal(decode >= 1 / 1.5)],
        ["prefill tok/s fp8 / bf16 (512 tokens)", f"{speed['fp8']['prefill']:.0f} / "
         f"{speed['bf16']['prefill']:.0f} = {prefill:.2f}x", "-", "-"],
        ["weight bytes in memory fp8 / bf16", f"{weight_nbytes(fp8.model) / 1e6:.1f} MB / "
         f"{weight_nbytes(bf16.model) / 1e6:.1f} MB = {mem:.3f}x", "<= 0.53x", goal(mem <= 0.53)],
        ["checkpoint file fp8 / bf16", f"{disk:.3f}x", "<= 0.53x", goal(disk <= 0.53)],
    ]
    print(table(["measure", "value", "goal", ""], rows) + "\n", flush=True)


def _demo_run(engine: Engine) -> Callable[[int], dict[str, float]]:
    def run(r: int) -> dict[str, float]:
        ids = random_prompt(FP8_PROMPT, engine.config.vocab_size, seed=2000 + r)
        done = engine.run(ids, SamplingParams(max_new_tokens=FP8_STEPS + 1, ignore_eos=True))
        return {"decode": done.decode_tokens_per_s, "prefill": FP8_PROMPT / done.ttft_s}
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer rounds, no fp32 rows")
    ap.add_argument("--part", choices=("all", "hf", "fp8"), default="all")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {load:.2f}"
          + (" (other processes are running: timings are noisy)" if load > 0.5 else "") + "\n")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="strata-bench-") as tmp:
        if args.part in ("all", "hf"):
            part1(Path(tmp), args.quick)
        if args.part in ("all", "fp8"):
            part2(Path(tmp), args.quick)
    print(f"threads {torch.get_num_threads()}, total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
