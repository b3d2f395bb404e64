#!/usr/bin/env python3
"""mtsum against transformers (PyTorch) and CTranslate2 on the same batch, in the same run.

Builds a Marian model of the real opus-mt-ru-en size with random weights (d_model 512, 6+6
layers, 8 heads, ffn 2048, vocab 62,518) in a temporary folder, in the hub layout: config.json,
model.safetensors, and the fixture Marian tokenizer (tests/fixtures/tokenizers/marian) with its
vocab.json padded to 62,518 entries so that the ids line up with the embedding. The batch is the
first N sentences of tests/fixtures/corpus/ru.txt, tokenized once here by transformers'
MarianTokenizer; every engine gets the same source ids (CTranslate2 gets the same tokens as
strings, as its documentation does for Marian). Every engine generates exactly --new-tokens
tokens per hypothesis (min = max), greedy and beam 4, with --threads threads, each engine in a
process of its own so that its peak memory (VmHWM) is its own.

    python3 scripts/bench_peers.py            # builds target/release/mtsum first
    python3 scripts/bench_peers.py --skip-build --mtsum target/release/mtsum

Needs: torch, transformers, sentencepiece, safetensors, ctranslate2.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_TOKENIZER = ROOT / "tests/fixtures/tokenizers/marian"
CORPUS = ROOT / "tests/fixtures/corpus/ru.txt"
VOCAB = 62518
MODES = (1, 4)


def peak_rss_mib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def build_model(folder: Path):
    """Random real-size Marian + padded fixture tokenizer, in the hub layout."""
    import torch
    from transformers import MarianConfig, MarianMTModel

    torch.manual_seed(0)
    config = MarianConfig(
        vocab_size=VOCAB, d_model=512, encoder_layers=6, decoder_layers=6,
        encoder_attention_heads=8, decoder_attention_heads=8,
        encoder_ffn_dim=2048, decoder_ffn_dim=2048, max_position_embeddings=512,
        activation_function="swish", scale_embedding=True, static_position_embeddings=True,
        pad_token_id=VOCAB - 1, decoder_start_token_id=VOCAB - 1, eos_token_id=0,
        forced_eos_token_id=0, bad_words_ids=[[VOCAB - 1]], share_encoder_decoder_embeddings=True,
    )
    MarianMTModel(config).eval().save_pretrained(folder, safe_serialization=True)
    for name in ("source.spm", "target.spm", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(FIXTURE_TOKENIZER / name, folder / name)
    vocab = json.loads((FIXTURE_TOKENIZER / "vocab.json").read_text())
    vocab.pop("<pad>")
    for i in range(len(vocab), VOCAB - 1):
        vocab[f"<filler_{i}>"] = i
    vocab["<pad>"] = VOCAB - 1
    assert sorted(vocab.values()) == list(range(VOCAB))
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))


def make_inputs(folder: Path, sentences: int):
    from transformers import MarianTokenizer

    tokenizer = MarianTokenizer.from_pretrained(folder)
    lines = [l for l in CORPUS.read_text().splitlines() if l.strip()][:sentences]
    ids = [tokenizer(line)["input_ids"] for line in lines]
    tokens = [tokenizer.convert_ids_to_tokens(i) for i in ids]
    (folder / "bench_ids.jsonl").write_text("".join(json.dumps(i) + "\n" for i in ids))
    (folder / "bench_tokens.json").write_text(json.dumps(tokens, ensure_ascii=False))
    return ids


def timed(fn, repeat):
    fn(warmup=True)
    best, produced = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        produced = fn(warmup=False)
        best = min(best, time.perf_counter() - start)
    return best, produced


def run_transformers(folder: Path, args):
    import torch
    from transformers import MarianMTModel

    torch.set_num_threads(args.threads)
    model = MarianMTModel.from_pretrained(folder).eval()
    ids = [json.loads(l) for l in (folder / "bench_ids.jsonl").read_text().splitlines()]
    width = max(map(len, ids))
    pad = model.config.pad_token_id
    input_ids = torch.tensor([i + [pad] * (width - len(i)) for i in ids])
    mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids])
    figures = []
    for beams in MODES:
        def go(warmup):
            n = 4 if warmup else len(ids)
            with torch.inference_mode():
                out = model.generate(
                    input_ids=input_ids[:n], attention_mask=mask[:n], num_beams=beams,
                    max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False,
                )
            return [len(row) - 1 for row in out.tolist()]
        seconds, lengths = timed(go, args.repeat)
        figures.append(result("transformers", beams, seconds, lengths))
    return figures


def run_ctranslate2(folder: Path, args, quantization):
    import ctranslate2

    converted = folder / f"ct2_{quantization or 'float32'}"
    if not converted.exists():
        ctranslate2.converters.TransformersConverter(str(folder)).convert(
            str(converted), quantization=quantization, force=True
        )
    translator = ctranslate2.Translator(
        str(converted), device="cpu", inter_threads=1, intra_threads=args.threads
    )
    tokens = json.loads((folder / "bench_tokens.json").read_text())
    name = f"ctranslate2 {quantization or 'float32'}"
    figures = []
    for beams in MODES:
        def go(warmup):
            batch = tokens[:4] if warmup else tokens
            out = translator.translate_batch(
                batch, beam_size=beams, max_batch_size=len(batch),
                max_decoding_length=args.new_tokens, min_decoding_length=args.new_tokens,
            )
            return [len(r.hypotheses[0]) for r in out]
        seconds, lengths = timed(go, args.repeat)
        figures.append(result(name, beams, seconds, lengths))
    return figures


def result(engine, beams, seconds, lengths):
    generated = sum(lengths)
    return {
        "engine": engine, "beams": beams, "seconds": seconds, "segments": len(lengths),
        "generated_tokens": generated, "tokens_per_s": generated / seconds,
        "segments_per_s": len(lengths) / seconds, "peak_rss_mib": peak_rss_mib(),
    }


def run_mtsum(folder: Path, args):
    cmd = [
        str(args.mtsum), "bench", "--translator", str(folder), "--ids-file",
        str(folder / "bench_ids.jsonl"), "--threads", str(args.threads), "--device", "cpu",
        "--sentences", str(args.sentences), "--new-tokens", str(args.new_tokens),
        "--repeat", str(args.repeat), "--json",
    ]
    figures = []
    for beams in MODES:
        out = subprocess.run(cmd + ["--beams", str(beams)], check=True, capture_output=True, text=True)
        for line in out.stdout.splitlines():
            f = json.loads(line)
            f["engine"] = "mtsum"
            figures.append(f)
    return figures


def peer_process(engine: str, folder: Path, args):
    """Runs one peer in a fresh interpreter so its peak memory is its own."""
    cmd = [sys.executable, __file__, "--peer", engine, "--folder", str(folder)]
    cmd += ["--threads", str(args.threads), "--new-tokens", str(args.new_tokens)]
    cmd += ["--sentences", str(args.sentences), "--repeat", str(args.repeat)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(figures, weights_mib, new_tokens):
    base = {f["beams"]: f["tokens_per_s"] for f in figures if f["engine"] == "transformers"}
    ct2 = {f["beams"]: f["tokens_per_s"] for f in figures if f["engine"] == "ctranslate2 float32"}
    lines = [
        f"| engine | mode | tokens/s | segments/s | vs transformers | vs CT2 float32 | peak RSS MiB (x weights {weights_mib:.0f} MiB) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for f in figures:
        mode = "greedy" if f["beams"] == 1 else f"beam {f['beams']}"
        check = "" if f["generated_tokens"] == f["segments"] * new_tokens else " (!)"
        lines.append(
            f"| {f['engine']} | {mode} | {f['tokens_per_s']:.0f}{check} | {f['segments_per_s']:.2f} | "
            f"{f['tokens_per_s'] / base[f['beams']]:.2f}x | {f['tokens_per_s'] / ct2[f['beams']]:.2f}x | "
            f"{f['peak_rss_mib']:.0f} ({f['peak_rss_mib'] / weights_mib:.2f}x) |"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sentences", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--mtsum", type=Path, default=ROOT / "target/release/mtsum")
    parser.add_argument("--skip-build", action="store_true")
    parser.add_argument("--keep", type=Path, help="build the model in this folder and keep it")
    parser.add_argument("--peer", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.peer:
        if args.peer == "transformers":
            figures = run_transformers(args.folder, args)
        else:
            figures = run_ctranslate2(args.folder, args, None if args.peer == "float32" else "int8")
        print(json.dumps(figures))
        return

    if not args.skip_build:
        subprocess.run(["cargo", "build", "--release", "--bin", "mtsum"], cwd=ROOT, check=True)
    work = args.keep or Path(tempfile.mkdtemp(prefix="mtsum-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if not (work / "model.safetensors").exists():
            build_model(work)
        make_inputs(work, args.sentences)
        weights_mib = (work / "model.safetensors").stat().st_size / 2**20
        figures = []
        for peer in ("transformers", "float32", "int8"):
            figures += peer_process(peer, work, args)
            print(f"done: {figures[-1]['engine']}", file=sys.stderr)
        figures += run_mtsum(work, args)
        print(f"{args.sentences} sentences, {args.new_tokens} new tokens each, {args.threads} threads, "
              f"random-weight Marian of opus-mt-ru-en's size")
        print(table(figures, weights_mib, args.new_tokens))
        print(json.dumps(figures), file=sys.stderr)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
