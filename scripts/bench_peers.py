#!/usr/bin/env python3
"""mtsum against transformers (PyTorch) and CTranslate2 on the same batch, in the same run.

Two models: the translator (--model marian) and the summarizer (--model t5), both by default.

Translator. Builds a Marian model of the real opus-mt-ru-en size with random weights (d_model 512, 6+6
layers, 8 heads, ffn 2048, vocab 62,518) in a temporary folder, in the hub layout: config.json,
model.safetensors, and the fixture Marian tokenizer (tests/fixtures/tokenizers/marian) with its
vocab.json padded to 62,518 entries so that the ids line up with the embedding. The batch is the
first N sentences of tests/fixtures/corpus/ru.txt, tokenized once here by transformers'
MarianTokenizer (about 27 tokens a sentence with this tokenizer) and, for --source-tokens 12,
each cut to its first 11 tokens plus the end token (about 12, the length of opus-mt's own
tokenizer on such sentences); every engine gets the same source ids (CTranslate2 gets the same
tokens as strings, as its documentation does for Marian). Every engine generates exactly
--new-tokens tokens per hypothesis (min = max), greedy and beam 4, with --threads threads, each
engine in a process of its own so that its peak memory (VmHWM) is its own.

Summarizer. A T5 of rut5_base_sum_gazeta's shape with random weights (its config.json's values:
d_model 768, 12+12 layers, 12 heads, d_kv 64, d_ff 2048, gated-gelu, vocab 30,000, untied output
layer), rut5's tokenizer (--t5-tokenizer, a folder or hub id); --t5-inputs inputs of 400 to 600
tokens (the fixture corpus run together and cut), 5 beams, exactly --t5-new-tokens new tokens.

Agreement: for each engine and mode, how many outputs have exactly the ids transformers
generated (for Marian the first --new-tokens - 1: transformers and mtsum force the end token
last, CTranslate2 does not; random weights make near-ties common, so this measures the
arithmetic's fidelity, CTranslate2 int8 being the yardstick for int8).

    python3 scripts/bench_peers.py            # builds target/release/mtsum first
    python3 scripts/bench_peers.py --skip-build --model marian --source-tokens 12 27
    python3 scripts/bench_peers.py --skip-build --rounds 3   # ratios per round and their median

Needs: torch, transformers, sentencepiece, safetensors, ctranslate2.
"""

import argparse
import json
import os
import shutil
import statistics
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
T5_BEAMS = 5
# rut5_base_sum_gazeta's config.json (IlyaGusev/rut5_base_sum_gazeta), the shape values.
T5_SHAPE = dict(
    vocab_size=30000, d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_decoder_layers=12,
    num_heads=12, feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
    layer_norm_epsilon=1e-6, tie_word_embeddings=False, pad_token_id=0, eos_token_id=1,
    decoder_start_token_id=2, bos_token_id=2,
)
RUT5_ASSETS = ROOT.parent / "shared/assets/rut5_base_sum_gazeta"


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


def build_t5(folder: Path, tokenizer: str):
    """Random T5 of rut5's shape + rut5's tokenizer, in the hub layout."""
    import torch
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    config = T5Config(**T5_SHAPE, dropout_rate=0.0)
    T5ForConditionalGeneration(config).eval().save_pretrained(folder, safe_serialization=True)
    AutoTokenizer.from_pretrained(tokenizer).save_pretrained(folder)
    for name in ("spiece.model", "tokenizer.json"):
        if (Path(tokenizer) / name).exists():
            shutil.copy(Path(tokenizer) / name, folder / name)


def corpus_lines():
    return [l for l in CORPUS.read_text().splitlines() if l.strip()]


def make_inputs(folder: Path, sentences: int, source_tokens: int):
    """Source ids (and tokens for CTranslate2) of the first sentences, cut to source_tokens."""
    from transformers import MarianTokenizer

    tokenizer = MarianTokenizer.from_pretrained(folder)
    ids = [tokenizer(line)["input_ids"] for line in corpus_lines()[:sentences]]
    if source_tokens:
        ids = [i[: source_tokens - 1] + [i[-1]] if len(i) > source_tokens else i for i in ids]
    return write_inputs(folder, f"marian{source_tokens}", ids, tokenizer)


def make_t5_inputs(folder: Path, count: int):
    """count inputs of 400 to 600 tokens (evenly spread), the corpus's tokens run together."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    stream = []
    for line in corpus_lines():
        stream += tokenizer(line)["input_ids"][:-1]
    end, ids, at = tokenizer.eos_token_id, [], 0
    for n in range(count):
        length = 400 + (200 * n) // max(count - 1, 1)
        take = [stream[(at + k) % len(stream)] for k in range(length - 1)]
        at += length - 1
        ids.append(take + [end])
    return write_inputs(folder, "t5", ids, tokenizer)


def write_inputs(folder, tag, ids, tokenizer):
    tokens = [tokenizer.convert_ids_to_tokens(i) for i in ids]
    (folder / f"bench_ids_{tag}.jsonl").write_text("".join(json.dumps(i) + "\n" for i in ids))
    (folder / f"bench_tokens_{tag}.json").write_text(json.dumps(tokens, ensure_ascii=False))
    return ids


def timed(fn, repeat):
    """Best wall seconds and best CPU seconds (process_time: every thread) of repeat runs."""
    fn(warmup=True)
    best, best_cpu, produced = float("inf"), float("inf"), None
    for _ in range(repeat):
        start, cpu = time.perf_counter(), time.process_time()
        produced = fn(warmup=False)
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return (best, best_cpu), produced


def modes_of(args):
    return (T5_BEAMS,) if args.tag == "t5" else MODES


def run_transformers(folder: Path, args):
    import torch
    from transformers import AutoModelForSeq2SeqLM

    torch.set_num_threads(args.threads)
    model = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
    ids = [json.loads(l) for l in (folder / f"bench_ids_{args.tag}.jsonl").read_text().splitlines()]
    width = max(map(len, ids))
    pad = model.config.pad_token_id
    input_ids = torch.tensor([i + [pad] * (width - len(i)) for i in ids])
    mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids])
    figures = []
    for beams in modes_of(args):
        def go(warmup):
            n = 2 if warmup else len(ids)
            with torch.inference_mode():
                out = model.generate(
                    input_ids=input_ids[:n], attention_mask=mask[:n], num_beams=beams,
                    max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False,
                )
            return [row[1:] for row in out.tolist()]
        seconds, outputs = timed(go, args.repeat)
        figures.append(result("transformers", beams, seconds, outputs))
    return figures


def run_ctranslate2(folder: Path, args, quantization):
    import ctranslate2
    from transformers import AutoTokenizer

    converted = folder / f"ct2_{quantization or 'float32'}"
    if not converted.exists():
        ctranslate2.converters.TransformersConverter(str(folder)).convert(
            str(converted), quantization=quantization, force=True
        )
    translator = ctranslate2.Translator(
        str(converted), device="cpu", inter_threads=1, intra_threads=args.threads
    )
    to_id = AutoTokenizer.from_pretrained(folder).convert_tokens_to_ids
    tokens = json.loads((folder / f"bench_tokens_{args.tag}.json").read_text())
    name = f"ctranslate2 {quantization or 'float32'}"
    figures = []
    for beams in modes_of(args):
        def go(warmup):
            batch = tokens[:2] if warmup else tokens
            out = translator.translate_batch(
                batch, beam_size=beams, max_batch_size=len(batch),
                max_decoding_length=args.new_tokens, min_decoding_length=args.new_tokens,
            )
            return [to_id(r.hypotheses[0]) for r in out]
        seconds, outputs = timed(go, args.repeat)
        figures.append(result(name, beams, seconds, outputs))
    return figures


def result(engine, beams, times, outputs):
    (seconds, cpu_seconds), lengths = times, [len(o) for o in outputs]
    generated = sum(lengths)
    return {
        "engine": engine, "beams": beams, "seconds": seconds, "cpu_seconds": cpu_seconds,
        "segments": len(lengths),
        "generated_tokens": generated, "tokens_per_s": generated / seconds,
        "segments_per_s": len(lengths) / seconds, "peak_rss_mib": peak_rss_mib(),
        "outputs": outputs,
    }


def mtsum_has_int8(mtsum: Path) -> bool:
    """Whether this build's --dtype takes int8 (the possible values in its help)."""
    out = subprocess.run([str(mtsum), "--help"], capture_output=True, text=True)
    return "int8" in out.stdout


def run_mtsum(folder: Path, args, tag, dtype):
    role = "--summarizer" if tag == "t5" else "--translator"
    ids_out = folder / f"mtsum_ids_{tag}_{dtype}.jsonl"
    cmd = [
        str(args.mtsum), "bench", role, str(folder), "--ids-file",
        str(folder / f"bench_ids_{tag}.jsonl"), "--threads", str(args.threads), "--device", "cpu",
        "--dtype", dtype, "--sentences", str(args.count), "--new-tokens", str(args.new_tokens),
        "--repeat", str(args.repeat), "--json", "--ids-out", str(ids_out),
    ]
    figures = []
    for beams in (T5_BEAMS,) if tag == "t5" else MODES:
        out = subprocess.run(cmd + ["--beams", str(beams)], check=True, capture_output=True, text=True)
        rows = [json.loads(l) for l in ids_out.read_text().splitlines()]
        for line in out.stdout.splitlines():
            f = json.loads(line)
            f["engine"] = f"mtsum {dtype}"
            f["outputs"] = [r["ids"] for r in rows if r["beams"] == beams]
            figures.append(f)
    return figures


def peer_process(engine: str, folder: Path, suite):
    """Runs one peer in a fresh interpreter so its peak memory is its own."""
    cmd = [sys.executable, __file__, "--peer", engine, "--folder", str(folder), "--tag", suite.tag]
    cmd += ["--threads", str(suite.threads), "--new-tokens", str(suite.new_tokens)]
    cmd += ["--repeat", str(suite.repeat)]
    env = dict(os.environ, OMP_NUM_THREADS=str(suite.threads))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(figures, weights_mib, new_tokens, int8_missing, compared):
    base = {f["beams"]: f for f in figures if f["engine"] == "transformers"}
    ct2 = {f["beams"]: f["tokens_per_s"] for f in figures if f["engine"] == "ctranslate2 float32"}
    cpu = lambda f: f["generated_tokens"] / f["cpu_seconds"]  # noqa: E731
    base_cpu = {f["beams"]: cpu(f) for f in figures if f["engine"] == "transformers"}
    ct2_cpu = {f["beams"]: cpu(f) for f in figures if f["engine"] == "ctranslate2 float32"}
    lines = [
        f"| engine | mode | tokens/s | vs transformers | vs CT2 float32 | tokens per CPU-s | vs transformers | vs CT2 float32 | same ids as transformers | peak RSS MiB (x weights {weights_mib:.0f} MiB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for f in figures:
        mode = "greedy" if f["beams"] == 1 else f"beam {f['beams']}"
        check = "" if f["generated_tokens"] == f["segments"] * new_tokens else " (!)"
        reference = base[f["beams"]]["outputs"]
        same = sum(a[:compared] == b[:compared] for a, b in zip(f["outputs"], reference))
        lines.append(
            f"| {f['engine']} | {mode} | {f['tokens_per_s']:.0f}{check} | "
            f"{f['tokens_per_s'] / base[f['beams']]['tokens_per_s']:.2f}x | "
            f"{f['tokens_per_s'] / ct2[f['beams']]:.2f}x | {cpu(f):.0f} | "
            f"{cpu(f) / base_cpu[f['beams']]:.2f}x | {cpu(f) / ct2_cpu[f['beams']]:.2f}x | "
            f"{same}/{len(reference)} | "
            f"{f['peak_rss_mib']:.0f} ({f['peak_rss_mib'] / weights_mib:.2f}x) |"
        )
    if int8_missing:
        lines.append("| mtsum int8 | - | not available (this build's --dtype has no int8) | | | | | | | |")
    return "\n".join(lines)


class Suite:
    """One table: a model, its inputs and how much each engine generates."""

    def __init__(self, args, tag, count, new_tokens, repeat):
        self.tag, self.count, self.new_tokens, self.repeat = tag, count, new_tokens, repeat
        self.threads, self.mtsum = args.threads, args.mtsum
        self.rounds = args.rounds


def more_round(folder: Path, suite, int8):
    """One more round of the engines the targets compare (CTranslate2 and mtsum; transformers'
    ids and speed come from the first round), in the same order, so that every round's ratios
    are taken a few seconds apart on the same machine."""
    figures = []
    for peer in ("float32", "int8"):
        figures += peer_process(peer, folder, suite)
    figures += run_mtsum(folder, suite, suite.tag, "f32")
    if int8:
        figures += run_mtsum(folder, suite, suite.tag, "int8")
    print(f"done: {suite.tag} one more round", file=sys.stderr)
    return figures


def rounds_table(rounds):
    """mtsum's tokens/s against CTranslate2's of the same round (float32 for f32, int8 for
    int8), per round and their median: single runs of a few seconds swing 10-20% on a shared
    machine, the median of several rounds much less."""
    pairs = [("mtsum f32", "ctranslate2 float32"), ("mtsum int8", "ctranslate2 int8")]
    lines = [
        f"\nRatios over {len(rounds)} rounds (tokens/s against CTranslate2 of the same round):",
        "| mtsum | against | mode | per round | median |",
        "|---|---|---|---|---:|",
    ]
    speed = lambda figs, engine, beams: next(  # noqa: E731
        (f["tokens_per_s"] for f in figs if f["engine"] == engine and f["beams"] == beams), None)
    for ours, theirs in pairs:
        for beams in sorted({f["beams"] for f in rounds[0] if f["engine"] == ours}):
            ratios = []
            for figs in rounds:
                a, b = speed(figs, ours, beams), speed(figs, theirs, beams)
                if a and b:
                    ratios.append(a / b)
            if not ratios:
                continue
            mode = "greedy" if beams == 1 else f"beam {beams}"
            each = " / ".join(f"{r:.2f}x" for r in ratios)
            lines.append(f"| {ours} | {theirs} | {mode} | {each} | {statistics.median(ratios):.2f}x |")
    return "\n".join(lines)


def run_suite(folder: Path, suite, title, engines):
    weights_mib = (folder / "model.safetensors").stat().st_size / 2**20
    figures = []
    for peer in engines:
        figures += peer_process(peer, folder, suite)
        print(f"done: {suite.tag} {figures[-1]['engine']}", file=sys.stderr)
    figures += run_mtsum(folder, suite, suite.tag, "f32")
    int8 = mtsum_has_int8(suite.mtsum)
    if int8:
        figures += run_mtsum(folder, suite, suite.tag, "int8")
    lengths = [len(json.loads(l)) for l in (folder / f"bench_ids_{suite.tag}.jsonl").read_text().splitlines()]
    print(f"\n{title}: {len(lengths)} inputs of {min(lengths)}-{max(lengths)} source tokens "
          f"(mean {sum(lengths) / len(lengths):.1f}), {suite.new_tokens} new tokens each, "
          f"{suite.threads} threads")
    # Marian's forced_eos_token_id puts the end token last in transformers and mtsum, not in
    # CTranslate2: the ids before it are compared.
    compared = suite.new_tokens - 1 if suite.tag.startswith("marian") else suite.new_tokens
    print(table(figures, weights_mib, suite.new_tokens, not int8, compared))
    sys.stdout.flush()
    if suite.rounds > 1:
        rounds = [figures] + [more_round(folder, suite, int8) for _ in range(suite.rounds - 1)]
        print(rounds_table(rounds))
        sys.stdout.flush()
    for f in figures:
        f.pop("outputs")
    print(json.dumps({"suite": suite.tag, "figures": figures}), file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("marian", "t5", "both"), default="both")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sentences", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument(
        "--source-tokens", type=int, nargs="+", default=[12, 0],
        help="Marian source lengths to measure: N cuts each sentence to N tokens (end token "
             "included), 0 keeps them whole (about 27 tokens with the fixture tokenizer)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="run CTranslate2 and mtsum this many times in all (alternating; transformers once) "
             "and print each round's ratios and their median")
    parser.add_argument("--t5-inputs", type=int, default=32)
    parser.add_argument("--t5-new-tokens", type=int, default=64)
    parser.add_argument("--t5-repeat", type=int, default=1)
    parser.add_argument(
        "--t5-tokenizer", default=str(RUT5_ASSETS) if RUT5_ASSETS.exists() else "IlyaGusev/rut5_base_sum_gazeta",
        help="rut5's tokenizer: a folder or hub id")
    parser.add_argument("--mtsum", type=Path, default=ROOT / "target/release/mtsum")
    parser.add_argument("--skip-build", action="store_true")
    parser.add_argument("--keep", type=Path, help="build the models in this folder and keep them")
    parser.add_argument("--peer", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tag", help=argparse.SUPPRESS)
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
    engines = ("transformers", "float32", "int8")
    try:
        if args.model in ("marian", "both"):
            marian = work / "marian"
            marian.mkdir(exist_ok=True)
            if not (marian / "model.safetensors").exists():
                build_model(marian)
            for length in args.source_tokens:
                make_inputs(marian, args.sentences, length)
                suite = Suite(args, f"marian{length}", args.sentences, args.new_tokens, args.repeat)
                run_suite(marian, suite, "Random-weight Marian of opus-mt-ru-en's size", engines)
        if args.model in ("t5", "both"):
            t5 = work / "t5"
            if not (t5 / "model.safetensors").exists():
                build_t5(t5, args.t5_tokenizer)
            make_t5_inputs(t5, args.t5_inputs)
            suite = Suite(args, "t5", args.t5_inputs, args.t5_new_tokens, args.t5_repeat)
            run_suite(t5, suite, f"Random-weight T5 of rut5_base_sum_gazeta's size, {T5_BEAMS} beams", engines)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
