#!/usr/bin/env python3
"""CTranslate2's int8 against its own float32 on mtsum's trained tiny fixtures.

`tests/int8_quality.rs` measures how often mtsum's `--dtype int8` generates the same ids as its
f32 on every generation case of tests/fixtures/reference/models. This script measures the same
share for CTranslate2 (converted from the same fixture folders, float32 and int8, one thread),
so the fixtures' sensitivity to int8 can be told apart from mtsum's quantizer. Settings CT2
cannot express exactly (min_length counted with the start token, early_stopping) are mapped to
their nearest option; both dtypes get the same options, so the comparison is int8 vs float32.

    pip install ctranslate2 transformers sentencepiece torch
    python3 scripts/int8_yardstick.py [--work /tmp/ct2fix]
"""
import argparse
import json
import os
import sys

import ctranslate2

FIXTURES = ["marian_tiny", "marian_deep", "t5_tiny", "rut5_tiny", "mt5_tiny"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def convert(name, work, quantization):
    out = os.path.join(work, f"{name}-{quantization}")
    if not os.path.exists(os.path.join(out, "model.bin")):
        src = os.path.join(ROOT, "tests", "fixtures", "models", name)
        ctranslate2.converters.TransformersConverter(src).convert(
            out, quantization=quantization, force=True
        )
    return out


def vocabulary(model_dir):
    for fname in ("shared_vocabulary.json", "source_vocabulary.json"):
        path = os.path.join(model_dir, fname)
        if os.path.exists(path):
            return json.load(open(path, encoding="utf-8"))
    path = os.path.join(model_dir, "shared_vocabulary.txt")
    return [line.rstrip("\n") for line in open(path, encoding="utf-8")]


def options(effective, kwargs):
    """CT2 options for one generation case (effective settings, kwargs over the defaults)."""
    beams = kwargs.get("num_beams", effective.get("num_beams") or 1)
    opts = {"beam_size": beams, "return_scores": False}
    if "max_new_tokens" in kwargs:
        opts["max_decoding_length"] = kwargs["max_new_tokens"]
    else:
        opts["max_decoding_length"] = kwargs.get("max_length", effective.get("max_length") or 20) - 1
    if "min_new_tokens" in kwargs:
        opts["min_decoding_length"] = kwargs["min_new_tokens"]
    elif "min_length" in kwargs:
        opts["min_decoding_length"] = max(0, kwargs["min_length"] - 1)
    ngram = kwargs.get("no_repeat_ngram_size", effective.get("no_repeat_ngram_size"))
    if ngram:
        opts["no_repeat_ngram_size"] = ngram
    if "length_penalty" in kwargs:
        opts["length_penalty"] = kwargs["length_penalty"]
    return opts


def measure(name, work):
    reference = json.load(
        open(os.path.join(ROOT, "tests/fixtures/reference/models", f"{name}.json"), encoding="utf-8")
    )
    dirs = {q: convert(name, work, q) for q in ("float32", "int8")}
    vocab = vocabulary(dirs["float32"])
    sources = [
        [vocab[i] for i in ids[:length]]
        for ids, length in zip(reference["input_ids"], reference["input_lengths"])
    ]
    translators = {
        q: ctranslate2.Translator(d, device="cpu", inter_threads=1, intra_threads=1)
        for q, d in dirs.items()
    }
    same = total = 0
    effective = reference["model"]["generation_config_effective"]
    for case in reference["generate"]:
        opts = options(effective, case["kwargs"])
        out = {
            q: [r.hypotheses[0] for r in t.translate_batch(sources, **opts)]
            for q, t in translators.items()
        }
        same += sum(a == b for a, b in zip(out["float32"], out["int8"]))
        total += len(sources)
    return same, total


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="/tmp/ct2fix", help="where converted models go")
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    print(f"CTranslate2 {ctranslate2.__version__}: int8 ids = float32 ids, every generation case")
    for name in FIXTURES:
        same, total = measure(name, args.work)
        print(f"{name}: {same}/{total} ({100 * same / total:.1f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
