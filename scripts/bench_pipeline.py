#!/usr/bin/env python3
"""The whole `mtsum run` on a batch of synthetic releases: releases per minute and where the time goes.

Builds (or reuses, with --keep) the two real-size random-weight models of scripts/bench_peers.py:
a Marian of opus-mt-ru-en's size (the translator) and a T5 of rut5_base_sum_gazeta's size (the
summarizer), with the generation settings of the real models (beam 4; beam 5, no repeated
4-gram). Writes --releases releases of the same shape (a title and --paragraphs paragraphs of
--per-paragraph sentences of tests/fixtures/corpus/ru.txt, taken in turn), runs `mtsum run` on
them with --threads threads, and reads the stage timings from the run's report.json.

Lengths are fixed so the work is known: every translation is exactly --translation-tokens
tokens (--min-length = --max-length), every summary exactly --summary-tokens tokens. (Random
weights would otherwise generate to the length limit or stop at random.)

    python3 scripts/bench_pipeline.py --keep /tmp/bench-models     # builds target/release/mtsum first

Needs what scripts/bench_peers.py needs.
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_peers  # noqa: E402

ROOT = bench_peers.ROOT


def write_generation_configs(marian: Path, t5: Path):
    """The real models' generation settings (opus-mt-ru-en: 4 beams; rut5: 5, no repeated 4-gram)."""
    marian_config = json.loads((marian / "config.json").read_text())
    (marian / "generation_config.json").write_text(json.dumps({
        "num_beams": 4, "max_length": 512, "bad_words_ids": [[marian_config["pad_token_id"]]],
        "decoder_start_token_id": marian_config["decoder_start_token_id"],
        "eos_token_id": 0, "forced_eos_token_id": 0, "pad_token_id": marian_config["pad_token_id"],
    }))
    (t5 / "generation_config.json").write_text(json.dumps({
        "num_beams": 5, "max_length": 200, "no_repeat_ngram_size": 4,
        "decoder_start_token_id": 2, "eos_token_id": 1, "pad_token_id": 0,
    }))


def linked_copy(source: Path, target: Path) -> Path:
    target.mkdir(parents=True)
    for item in source.iterdir():
        if item.is_file() and item.name != "generation_config.json":
            (target / item.name).symlink_to(item.resolve())
    return target


def write_releases(folder: Path, count: int, paragraphs: int, per_paragraph: int):
    lines = bench_peers.corpus_lines()
    at = 0

    def take(n):
        nonlocal at
        chosen = [lines[(at + k) % len(lines)] for k in range(n)]
        at += n
        return chosen

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        title = take(1)[0].rstrip(".")
        body = ["\n".join([" ".join(take(per_paragraph))]) for _ in range(paragraphs)]
        (folder / f"release-{i:03}.txt").write_text(title + "\n\n" + "\n\n".join(body) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--releases", type=int, default=100)
    parser.add_argument("--paragraphs", type=int, default=4)
    parser.add_argument("--per-paragraph", type=int, default=5)
    parser.add_argument("--translation-tokens", type=int, default=32)
    parser.add_argument("--summary-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mtsum", type=Path, default=ROOT / "target/release/mtsum")
    parser.add_argument("--skip-build", action="store_true")
    parser.add_argument("--keep", type=Path, help="build the models in this folder and keep them")
    parser.add_argument(
        "--t5-tokenizer", default=str(bench_peers.RUT5_ASSETS) if bench_peers.RUT5_ASSETS.exists()
        else "IlyaGusev/rut5_base_sum_gazeta", help="rut5's tokenizer: a folder or hub id")
    args = parser.parse_args()

    if not args.skip_build:
        subprocess.run(["cargo", "build", "--release", "--bin", "mtsum"], cwd=ROOT, check=True)
    work = args.keep or Path(tempfile.mkdtemp(prefix="mtsum-pipeline-"))
    marian, t5 = work / "marian", work / "t5"
    if not (marian / "model.safetensors").exists():
        marian.mkdir(parents=True, exist_ok=True)
        bench_peers.build_model(marian)
    if not (t5 / "model.safetensors").exists():
        bench_peers.build_t5(t5, args.t5_tokenizer)
    run = Path(tempfile.mkdtemp(prefix="mtsum-pipeline-run-"))
    # The run's own model folders (links to the built files), so that their generation
    # configs do not change the models bench_peers.py measures in the same --keep folder.
    marian, t5 = linked_copy(marian, run / "marian"), linked_copy(t5, run / "t5")
    write_generation_configs(marian, t5)
    releases, out = run / "releases", run / "out"
    write_releases(releases, args.releases, args.paragraphs, args.per_paragraph)

    # Translations: --min-length = --max-length. Summaries: the summarizer's flags would take the
    # same global bounds, so the summarizer's own fixed length goes through its generation config.
    t5_config = json.loads((t5 / "generation_config.json").read_text())
    t5_config.update(min_new_tokens=args.summary_tokens, max_new_tokens=args.summary_tokens)
    t5_config.pop("max_length")
    (t5 / "generation_config.json").write_text(json.dumps(t5_config))
    marian_config = json.loads((marian / "generation_config.json").read_text())
    marian_config.update(min_new_tokens=args.translation_tokens, max_new_tokens=args.translation_tokens)
    marian_config.pop("max_length")
    (marian / "generation_config.json").write_text(json.dumps(marian_config))

    cmd = [
        str(args.mtsum), "run", str(releases), "--out", str(out), "--translator", str(marian),
        "--summarizer", str(t5), "--device", "cpu", "--threads", str(args.threads), "--quiet",
    ]
    started = time.perf_counter()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of the run (every thread), so a figure taken on a busy machine says how much
    # of the 2 cores it had.
    user = cpu_after.ru_utime - cpu_before.ru_utime
    system = cpu_after.ru_stime - cpu_before.ru_stime
    report = json.loads((out / "report.json").read_text())
    timings, stages = report["timings"], report["timings"]["stages"]
    total = timings["total_seconds"]
    rest = total - sum(stages.values())
    outside = wall - total - timings["load_seconds"]
    tokens = report["throughput"]
    print(f"{report['counts']['processed']} of {args.releases} releases (title + {args.paragraphs}x"
          f"{args.per_paragraph} sentences each), {tokens['segments']} model inputs, "
          f"{tokens['generated_tokens']} generated tokens; translations {args.translation_tokens} "
          f"tokens (beam 4), summaries {args.summary_tokens} tokens (beam 5, no repeated 4-gram), "
          f"{args.threads} threads")
    print(f"releases per minute: {args.releases / total * 60:.1f} (batch {total:.1f} s; "
          f"model loading {timings['load_seconds']:.1f} s and start/read {outside:.1f} s besides)")
    print(f"CPU: {user + system:.0f} s ({user:.0f} user, {system:.0f} system) in {wall:.1f} s wall, "
          f"{(user + system) / wall:.2f} cores on average; "
          f"{args.releases / (user + system) * 60:.1f} releases per CPU-minute")
    print("| stage | seconds | share of the batch |")
    print("|---|---:|---:|")
    for name, seconds in (
        ("translation (translator calls)", stages["translate_seconds"]),
        ("summary (summarizer calls)", stages["summarize_seconds"]),
        ("segmentation", stages["segment_seconds"]),
        ("I/O (writing releases and digest)", stages["write_seconds"]),
        ("other text work (guards, alignment, summary chunking, scheduling)", rest),
    ):
        print(f"| {name} | {seconds:.2f} | {100 * seconds / total:.1f}% |")
    print(json.dumps(report["timings"]), file=sys.stderr)


if __name__ == "__main__":
    main()
