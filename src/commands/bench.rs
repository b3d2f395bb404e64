//! `mtsum bench`: throughput of the engine on one fixed batch, with a fixed number of generated
//! tokens (min = max), so a model with random weights does the same work as a trained one.
//! It times the translator (`--translator`) or the summarizer (`--summarizer`): the same
//! measurement, on inputs of the length each sees in `mtsum run` (`--source-tokens`).
//! scripts/bench_peers.py runs it beside transformers and CTranslate2 on the same inputs;
//! scripts/bench_pipeline.py times a whole `mtsum run`.

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
  mtsum bench --translator ./marian-random --source-tokens 12
  mtsum bench --summarizer ./t5-random --source-tokens 400-600 --sentences 32 --beams 5 --new-tokens 64
  mtsum bench --summarizer ./model.gguf --threads 2 --new-tokens 64   prompt and generation tokens/s
  python scripts/bench_peers.py      the same batch through transformers and CTranslate2 too
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
    /// Inputs of exactly N source tokens (the end token included), or of N to M spread
    /// evenly (`400-600`): the input sentences' tokens run together and cut, so the work
    /// per input is known whatever the tokenizer.
    #[arg(long, value_name = "N[-M]", value_parser = parse_token_range, conflicts_with = "ids_file")]
    pub source_tokens: Option<(usize, usize)>,
    /// Source token ids instead of text, a JSON array per line (the end token included).
    #[arg(long, value_name = "FILE")]
    pub ids_file: Option<PathBuf>,
    /// Timed runs per mode; the fastest counts.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub repeat: usize,
    /// One JSON object per mode instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write the generated ids of each mode's last timed run here: one JSON object per mode
    /// and input (`{"beams": 4, "ids": [...]}`), for comparing outputs with other engines.
    #[arg(long, value_name = "FILE")]
    pub ids_out: Option<PathBuf>,
}

/// `N` or `N-M` for `--source-tokens`.
fn parse_token_range(text: &str) -> std::result::Result<(usize, usize), String> {
    let number = |t: &str| {
        t.trim().parse::<usize>().map_err(|_| {
            format!("expected N or N-M source tokens (like 25 or 400-600), got {text:?}")
        })
    };
    let (low, high) = match text.split_once('-') {
        Some((low, high)) => (number(low)?, number(high)?),
        None => (number(text)?, number(text)?),
    };
    if low < 2 || high < low {
        return Err(format!(
            "source tokens {text:?}: need at least 2 (a token and the end token), and N <= M"
        ));
    }
    Ok((low, high))
}

/// Which model `mtsum bench` times. Each kind of model has its own path through the bench;
/// the encoder-decoder models (Marian, T5, BART) share one.
enum Subject<'a> {
    /// An encoder-decoder model, as the translator or the summarizer.
    Seq2seq { spec: &'a str, role: &'static str },
}

impl<'a> Subject<'a> {
    fn of(global: &'a GlobalArgs) -> Result<Self> {
        match (global.translator.as_deref(), global.summarizer.as_deref()) {
            (Some(_), Some(_)) => Err(Error::Usage(
                "mtsum bench times one model: give --translator MODEL or --summarizer MODEL, \
                 not both (scripts/bench_pipeline.py times a whole `mtsum run`)"
                    .into(),
            )),
            (Some(spec), None) => Ok(Subject::Seq2seq {
                spec,
                role: "translator",
            }),
            (None, Some(spec)) => Ok(Subject::Seq2seq {
                spec,
                role: "summarizer",
            }),
            (None, None) => Err(Error::Usage(
                "mtsum bench needs --translator MODEL or --summarizer MODEL (hub id, preset or \
                 folder)"
                    .into(),
            )),
        }
    }
}

/// One measured mode.
#[derive(Debug, serde::Serialize)]
struct Figures {
    /// `translator` or `summarizer`.
    model: String,
    mode: String,
    /// The run's dtype as the loader reports it ("f32", "int8", ...).
    dtype: String,
    beams: usize,
    segments: usize,
    /// Mean source tokens per input (end token included).
    source_tokens: f64,
    generated_tokens: usize,
    seconds: f64,
    /// CPU time of the process (user + system, all threads) over the same run: on a machine
    /// shared with other jobs, a steadier measure of the work than wall time.
    cpu_seconds: f64,
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
    let subject = Subject::of(global)?;
    if args.sentences == 0 || args.new_tokens == 0 || args.repeat == 0 {
        return Err(Error::Usage(
            "--sentences, --new-tokens and --repeat must be at least 1".into(),
        ));
    }
    let mut ids_out = match &args.ids_out {
        Some(path) => Some((
            path,
            std::fs::File::create(path).map_err(|e| Error::io(path, e))?,
        )),
        None => None,
    };
    match subject {
        Subject::Seq2seq { spec, role } => {
            let runner = open_runner(spec, global)?;
            bench_seq2seq(&runner, role, &args, global, &mut ids_out)
        }
    }
}

/// Times an encoder-decoder model: greedy and beam 4 for a translator, its own generation
/// config's beams (5 for rut5) for a summarizer, unless --beams says.
fn bench_seq2seq(
    runner: &Runner<crate::models::AnyModel>,
    role: &str,
    args: &BenchArgs,
    global: &GlobalArgs,
    ids_out: &mut Option<(&PathBuf, std::fs::File)>,
) -> Result<Outcome> {
    let sources = sources(args, runner)?;
    let weights_mib = runner.dir().map_or(0, weights_size) as f64 / MIB;
    let modes = match (global.beams, role) {
        (Some(b), _) => vec![b],
        (None, "summarizer") => vec![runner.resolve(&GenerationOverrides::default())?.num_beams],
        (None, _) => vec![1, 4],
    };
    let source_tokens = sources.iter().map(Vec::len).sum::<usize>() as f64 / sources.len() as f64;
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
        // (--batch-tokens, default schedule::default_budget).
        let run = |batch: &[&[u32]]| -> Result<Vec<Vec<u32>>> {
            let owned: Vec<Vec<u32>> = batch.iter().map(|s| s.to_vec()).collect();
            Ok(runner.generate_ids(&owned, &settings, &|_, _| {})?)
        };
        // Warm-up on a few inputs: page in the weights, size the allocator.
        run(&batch[..batch.len().min(4)])?;
        let (mut best, mut best_cpu) = (f64::INFINITY, f64::INFINITY);
        let mut outputs = Vec::new();
        for _ in 0..args.repeat {
            let (started, cpu) = (Instant::now(), cpu_seconds());
            outputs = run(&batch)?;
            best = best.min(started.elapsed().as_secs_f64());
            best_cpu = best_cpu.min(cpu_seconds() - cpu);
        }
        let generated = outputs.iter().map(Vec::len).sum();
        if let Some((path, file)) = ids_out {
            use std::io::Write;
            for ids in &outputs {
                let line = serde_json::json!({ "beams": beams, "ids": ids });
                writeln!(file, "{line}").map_err(|e| Error::io(&**path, e))?;
            }
        }
        let figures = Figures {
            model: role.to_string(),
            mode: if beams == 1 {
                "greedy".into()
            } else {
                format!("beam {beams}")
            },
            dtype: runner.info().dtype.clone(),
            beams,
            segments: batch.len(),
            source_tokens,
            generated_tokens: generated,
            seconds: best,
            cpu_seconds: best_cpu,
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
        "{} {:<4} {:<8} {:>4} segments ({:.0} source tokens) x {:>3} tokens: {:>8.1} segments/s {:>9.1} tokens/s  ({:.2} s), peak RSS {:.0} MiB ({:.2}x weights {:.0} MiB)",
        f.model,
        f.dtype,
        f.mode,
        f.segments,
        f.source_tokens,
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
/// tokenized, repeated until there are `--sentences` of them; with --source-tokens, those
/// tokens run together and cut into inputs of the asked lengths.
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
    match args.source_tokens {
        Some(range) => Ok(cut_to_lengths(&base, range, args.sentences)),
        None => Ok(base.iter().cycle().take(args.sentences).cloned().collect()),
    }
}

/// `count` inputs whose lengths step evenly from `low` to `high` tokens (end token included):
/// the sentences' tokens (each without its end token) run together, repeated as needed, each
/// input a fresh cut of that stream closed by the end token the tokenizer appends.
fn cut_to_lengths(
    sentences: &[Vec<u32>],
    (low, high): (usize, usize),
    count: usize,
) -> Vec<Vec<u32>> {
    let end = *sentences[0]
        .last()
        .expect("encoded sentences hold the end token");
    let body = |s: &Vec<u32>| s[..s.len().saturating_sub(1)].to_vec();
    let mut stream = sentences
        .iter()
        .map(body)
        .filter(|b| !b.is_empty())
        .cycle()
        .flatten();
    (0..count)
        .map(|i| {
            let len = match count {
                1 => low,
                _ => low + (high - low) * i / (count - 1),
            };
            let mut ids: Vec<u32> = stream.by_ref().take(len - 1).collect();
            ids.push(end);
            ids
        })
        .collect()
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

/// User + system CPU seconds of the process so far (all threads; 0 where /proc is not
/// available).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which is in parentheses and may hold spaces):
    // utime and stime are the 12th and 13th, in clock ticks (100 a second on Linux).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / 100.0
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
