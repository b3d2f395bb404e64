//! `mtsum bench`: throughput of the engine on one fixed batch, with a fixed number of generated
//! tokens (min = max), so a model with random weights does the same work as a trained one.
//! scripts/bench_peers.py runs it beside transformers and CTranslate2 on the same inputs.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;

use super::stdout::Stdout;
use crate::cli::GlobalArgs;
use crate::commands::common::open_runner;
use crate::generate::{GenerationOverrides, Runner};
use crate::Outcome;
use crate::{Error, Result};

const EXAMPLES: &str = "\
Examples:
  mtsum bench --translator Helsinki-NLP/opus-mt-ru-en --threads 2
  mtsum bench --translator ./marian-random --ids-file inputs.jsonl --json
  python scripts/bench_peers.py      the same batch through transformers and CTranslate2 too
  mtsum bench --summarizer ./model.gguf --threads 2 --new-tokens 64   prompt and generation tokens/s
  python scripts/bench_llm.py --model ./model.gguf   the same through llama.cpp too";

/// Sentences of press-release style used when no input is given (our own writing).
const SENTENCES: &[&str] = &[
    "Администрация города сообщила о завершении ремонта моста через реку.",
    "В понедельник губернатор области провёл совещание с руководителями районов.",
    "Новая линия метро откроется для пассажиров в конце следующего года.",
    "По данным статистического ведомства, цены на продукты выросли на два процента.",
    "Компания представила отчёт о результатах работы за третий квартал.",
    "Министерство здравоохранения напомнило жителям о сезонной вакцинации.",
    "В школах региона начались каникулы, которые продлятся до десятого января.",
    "Участники форума обсудили развитие малого бизнеса и поддержку экспорта.",
];

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct BenchArgs {
    /// Inputs handed to the engine at once (its scheduler cuts them by --batch-tokens).
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub sentences: usize,
    /// Tokens generated per input (both --min-length and --max-length).
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub new_tokens: usize,
    /// Text inputs, one per line (default: built-in Russian sentences, repeated as needed).
    #[arg(long, value_name = "FILE", conflicts_with = "ids_file")]
    pub input: Option<PathBuf>,
    /// Source token ids instead of text, a JSON array per line (the end token included).
    #[arg(long, value_name = "FILE")]
    pub ids_file: Option<PathBuf>,
    /// Timed runs per mode; the fastest counts.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub repeat: usize,
    /// One JSON object per mode instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One measured mode.
#[derive(Debug, serde::Serialize)]
struct Figures {
    mode: String,
    beams: usize,
    segments: usize,
    generated_tokens: usize,
    seconds: f64,
    segments_per_s: f64,
    tokens_per_s: f64,
    peak_rss_mib: f64,
    weights_mib: f64,
}

pub fn execute(args: BenchArgs, global: &GlobalArgs) -> Result<Outcome> {
    // A GGUF LLM summarizer has its own bench: prompt and generation speed (bench_llm.rs).
    if let Some(spec) = (global.summarizer.as_deref()).filter(|s| crate::hub::is_gguf_spec(s)) {
        return super::bench_llm::execute(spec, &args, global);
    }
    let spec = global.translator.as_deref().ok_or_else(|| {
        Error::Usage("mtsum bench needs --translator MODEL (hub id, preset or folder)".into())
    })?;
    if args.sentences == 0 || args.new_tokens == 0 || args.repeat == 0 {
        return Err(Error::Usage(
            "--sentences, --new-tokens and --repeat must be at least 1".into(),
        ));
    }
    let runner = open_runner(spec, global)?;
    let sources = sources(&args, &runner)?;
    let weights_mib = runner.dir().map_or(0, weights_size) as f64 / MIB;
    let modes = match global.beams {
        Some(b) => vec![b],
        None => vec![1, 4],
    };
    for beams in modes {
        let overrides = GenerationOverrides {
            num_beams: Some(beams),
            max_new_tokens: Some(args.new_tokens),
            min_new_tokens: Some(args.new_tokens),
            ..Default::default()
        };
        let settings = runner.resolve(&overrides)?;
        let batch: Vec<&[u32]> = sources.iter().map(Vec::as_slice).collect();
        // The whole batch goes to the engine at once; its scheduler cuts it by the token budget
        // (--batch-tokens, default schedule::default_batch_tokens).
        let run = |batch: &[&[u32]]| -> Result<Vec<Vec<u32>>> {
            let owned: Vec<Vec<u32>> = batch.iter().map(|s| s.to_vec()).collect();
            Ok(runner.generate_ids(&owned, &settings, &|_, _| {})?)
        };
        // Warm-up on a few inputs: page in the weights, size the allocator.
        run(&batch[..batch.len().min(4)])?;
        let mut best = f64::INFINITY;
        let mut generated = 0;
        for _ in 0..args.repeat {
            let started = Instant::now();
            let out = run(&batch)?;
            best = best.min(started.elapsed().as_secs_f64());
            generated = out.iter().map(Vec::len).sum();
        }
        let figures = Figures {
            mode: if beams == 1 {
                "greedy".into()
            } else {
                format!("beam {beams}")
            },
            beams,
            segments: batch.len(),
            generated_tokens: generated,
            seconds: best,
            segments_per_s: batch.len() as f64 / best,
            tokens_per_s: generated as f64 / best,
            peak_rss_mib: peak_rss_bytes() as f64 / MIB,
            weights_mib,
        };
        report(&figures, args.json)?;
    }
    Ok(Outcome::Done)
}

const MIB: f64 = 1024.0 * 1024.0;

fn report(f: &Figures, json: bool) -> Result<()> {
    let mut stdout = Stdout::lock();
    if json {
        return stdout.line(&serde_json::to_string(f).expect("figures serialize"));
    }
    stdout.line(&format!(
        "{:<8} {:>4} segments x {:>3} tokens: {:>8.1} segments/s {:>9.1} tokens/s  ({:.2} s), peak RSS {:.0} MiB ({:.2}x weights {:.0} MiB)",
        f.mode,
        f.segments,
        f.generated_tokens / f.segments.max(1),
        f.segments_per_s,
        f.tokens_per_s,
        f.seconds,
        f.peak_rss_mib,
        f.peak_rss_mib / f.weights_mib.max(1e-9),
        f.weights_mib,
    ))
}

/// The batch: ids from --ids-file, or the lines of --input (or the built-in sentences)
/// tokenized, repeated until there are `--sentences` of them.
fn sources(args: &BenchArgs, runner: &Runner<crate::models::AnyModel>) -> Result<Vec<Vec<u32>>> {
    let base: Vec<Vec<u32>> = if let Some(path) = &args.ids_file {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        (text.lines().enumerate())
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(n, line)| {
                serde_json::from_str(line).map_err(|e| {
                    Error::Usage(format!(
                        "{}:{}: expected a JSON array of token ids ({e})",
                        path.display(),
                        n + 1
                    ))
                })
            })
            .collect::<Result<_>>()?
    } else {
        let lines: Vec<String> = match &args.input {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| Error::io(path, e))?
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string)
                .collect(),
            None => SENTENCES.iter().map(|s| s.to_string()).collect(),
        };
        (lines.iter().enumerate())
            .map(|(i, l)| runner.encode(i, l))
            .collect::<crate::generate::Result<_>>()?
    };
    if base.is_empty() {
        return Err(Error::Usage("mtsum bench: the input has no lines".into()));
    }
    Ok(base.iter().cycle().take(args.sentences).cloned().collect())
}

/// Bytes of the weight files in a local model folder (0 when the model is not a folder).
fn weights_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.ends_with(".safetensors") || name == "pytorch_model.bin"
        })
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// The process's peak resident memory (VmHWM), 0 where /proc is not available.
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
