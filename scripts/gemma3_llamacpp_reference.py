#!/usr/bin/env python3
"""llama.cpp's answers on the real Gemma 3 270M Q4_K_M, for tests/llm_gemma3_real.rs (CI has no
llama.cpp, so the answers are committed): tokenizer ids of every tokenizer trap line, and greedy
continuations (32 new tokens) of 12 prompts with, at each step, the gap between llama.cpp's two
best logits (where two correct implementations may part) and the first step's 64 best logits.

Usage: python3 scripts/gemma3_llamacpp_reference.py [GGUF] (default: $MTSUM_GEMMA3_GGUF, then
../shared/gguf/gemma-3-270m-q4_k_m.gguf). Needs llama-cpp-python.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import llama_cpp

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "reference" / "gemma3_270m_llamacpp.json"
PROMPTS = [
    "Сотрудники полиции задержали подозреваемого в краже",
    "В Москве состоялось совещание руководителей территориальных органов МВД России.",
    "Министр внутренних дел провёл рабочую встречу",
    "По данным пресс-службы, в результате пожара",
    "Возбуждено уголовное дело по статье 158 УК РФ",
    "Погода в Санкт-Петербурге завтра будет",
    "The ministry said on Monday that",
    "Police officers detained a suspect in",
    "A meeting of the heads of regional police departments",
    "According to the press service, the fire",
    "The capital of France is",
    "Once upon a time, in a small village,",
]
NEW_TOKENS = 32


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
        "MTSUM_GEMMA3_GGUF", str(ROOT.parent / "shared" / "gguf" / "gemma-3-270m-q4_k_m.gguf")
    )
    cases = json.loads((ROOT / "tests" / "fixtures" / "corpus" / "tokenizer_cases.json").read_text())
    vocab = llama_cpp.Llama(path, vocab_only=True, verbose=False)
    tokens = [vocab.tokenize(c.encode(), add_bos=True, special=False) for c in cases]
    del vocab
    llm = llama_cpp.Llama(path, n_ctx=512, n_threads=2, n_batch=512, logits_all=True, verbose=False)
    prompts = []
    for text in PROMPTS:
        ids = llm.tokenize(text.encode(), add_bos=True, special=False)
        # A fresh sequence for each prompt: the cache is cleared from position 0.
        llm.reset()
        llm._ctx.kv_cache_clear() if hasattr(llm._ctx, "kv_cache_clear") else None
        llm.eval(ids)
        generated, gaps, first = [], [], None
        for step in range(NEW_TOKENS):
            logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            order = np.argsort(-logits, kind="stable")
            if step == 0:
                first = [[int(i), round(float(logits[i]), 4)] for i in order[:64]]
            token = int(order[0])
            gaps.append(round(float(logits[order[0]] - logits[order[1]]), 4))
            generated.append(token)
            if step + 1 < NEW_TOKENS:
                llm.eval([token])
        prompts.append({
            "text": text,
            "ids": ids,
            "greedy": generated,
            "top2_gaps": gaps,
            "first_top64": first,
            "text_out": llm.detokenize(generated).decode("utf-8", errors="replace"),
        })
    reference = {
        "model": Path(path).name,
        "llama_cpp_python": llama_cpp.__version__,
        "settings": "n_ctx=512, n_threads=2, f16 KV cache, greedy (argmax of the logits)",
        "tokenize": "Llama.tokenize(text, add_bos=True, special=False)",
        "token_cases": [{"text": c, "ids": t} for c, t in zip(cases, tokens)],
        "prompts": prompts,
    }
    OUT.write_text(json.dumps(reference, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
