//! What the subcommands share: turning the global flags into models and generation settings,
//! reading inputs (releases for `run`, `translate` and `summarize`; UTF-8 text for `segment`,
//! `tokenize` and `generate`), and reporting failed lines and `--stats`.

use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use super::allocator;
use crate::cli::{GlobalArgs, SummaryLengthFlag, SummarySideFlag};
use crate::generate::{GenerationOverrides, Runner, TokenCounts};
use crate::hub;
use crate::io::read::{self, ReadOptions};
use crate::io::{encoding, Input, ReadFailure};
use crate::loader::{self, Role};
use crate::models::AnyModel;
use crate::pipeline::batch::{self, ReportTimings, Throughput};
use crate::pipeline::llm::Sampling;
use crate::pipeline::{SummaryOptions, TextGenerator};
use crate::progress::{chain, Finished, LogLines, Observer};
use crate::summary::{SummaryLength, SummarySide};
use crate::{Error, Result};

/// The translator used when `--translator` is not given (a preset in `models/`).
pub const DEFAULT_TRANSLATOR: &str = "opus-mt-ru-en";
/// The summarizer used when `--summarizer` is not given (a preset in `models/`).
pub const DEFAULT_SUMMARIZER: &str = "rut5-base-sum-gazeta";
/// The summarizer of `--summarize-from en` when `--summarizer` is not given.
pub const DEFAULT_ENGLISH_SUMMARIZER: &str = "distilbart-cnn-12-6";

/// The glossaries of `--glossary FILE` (repeatable), read and checked before any model loads:
/// a bad line is a fatal error (exit 2) that names the file and the line.
pub fn glossary(files: &[PathBuf]) -> Result<crate::text::glossary::Glossary> {
    let mut glossary = crate::text::glossary::Glossary::default();
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
        glossary
            .add(&file.display().to_string(), &text)
            .map_err(|err| Error::Usage(format!("glossary {err}")))?;
    }
    Ok(glossary)
}

/// The loaded models of a command and how long loading took.
#[derive(Default)]
pub struct Models {
    pub translator: Option<Box<dyn TextGenerator>>,
    pub summarizer: Option<Box<dyn TextGenerator>>,
    pub load_seconds: f64,
}

impl Models {
    /// Resolves and loads the models a command needs: the translator when asked, and a
    /// summarizer when `summarizer` names the default to use without `--summarizer`. Any
    /// failure is fatal (exit 2): the message names the model and the file at fault.
    pub fn load(global: &GlobalArgs, translator: bool, summarizer: Option<&str>) -> Result<Self> {
        Self::load_with(global, translator, summarizer, Sampling::default())
    }

    /// As [`Models::load`], with the sampling of an LLM summarizer (`--temperature`,
    /// `--top-p`, `--seed`). The summarizer is an LLM when its spec names a GGUF file (a
    /// repo's `:file.gguf`, a GGUF preset, a local .gguf file), else a seq2seq model; the
    /// sampling flags are refused for the latter.
    pub fn load_with(
        global: &GlobalArgs,
        translator: bool,
        summarizer: Option<&str>,
        sampling: Sampling,
    ) -> Result<Self> {
        let started = Instant::now();
        let options = global.load_options();
        let (device, dtype) = options.open_device()?;
        let notes = LogLines::new(global.verbosity());
        let load = |spec: &str, role| -> Result<Box<dyn TextGenerator>> {
            let runner = allocator::loading(&device, || {
                loader::open(spec, &options, &device, dtype, role, &notes)
            })?;
            Ok(Box::new(runner))
        };
        let translator = match translator {
            true => {
                let spec = global.translator.as_deref().unwrap_or(DEFAULT_TRANSLATOR);
                if hub::is_gguf_spec(spec) {
                    return Err(Error::Usage(format!(
                        "--translator {spec}: a GGUF LLM can only be the summarizer \
                         (--summarizer); the translator is a seq2seq model such as opus-mt-ru-en"
                    )));
                }
                Some(load(spec, Role::Generate)?)
            }
            false => None,
        };
        // The summarizer takes config.json's task_specific_params.summarization and prefix, as
        // transformers' summarization pipeline did.
        let summarizer = match summarizer {
            None => None,
            Some(default) => {
                let spec = global.summarizer.as_deref().unwrap_or(default);
                if hub::is_gguf_spec(spec) {
                    let llm = allocator::loading(&device, || {
                        loader::open_llm(spec, &options, &device, sampling, &notes)
                    })?;
                    Some(Box::new(llm) as Box<dyn TextGenerator>)
                } else if sampling.is_set() {
                    return Err(Error::Usage(format!(
                        "--temperature, --top-p and --seed apply to LLM summarizers (GGUF); \
                         {spec} is a seq2seq model, which decodes greedily or by beam search"
                    )));
                } else {
                    Some(load(spec, Role::Summarizer)?)
                }
            }
        };
        Ok(Models {
            translator,
            summarizer,
            load_seconds: started.elapsed().as_secs_f64(),
        })
    }

    pub fn translator(&self) -> Option<&dyn TextGenerator> {
        self.translator.as_deref()
    }

    pub fn summarizer(&self) -> Option<&dyn TextGenerator> {
        self.summarizer.as_deref()
    }
}

/// The one model of `generate` and `bench`: `spec` resolved and loaded on the device and dtype
/// the global flags choose.
pub fn open_runner(spec: &str, global: &GlobalArgs) -> Result<Runner<AnyModel>> {
    let options = global.load_options();
    let (device, dtype) = options.open_device()?;
    let notes = LogLines::new(global.verbosity());
    allocator::loading(&device, || {
        loader::open(spec, &options, &device, dtype, Role::Generate, &notes)
    })
}

/// How summaries are made; shared by `run` and `summarize`.
#[derive(Debug, Clone, Args)]
pub struct SummaryFlags {
    /// Summary length: sets the summarizer's generated-token bounds (short 8-60, medium
    /// 24-120, long 48-200); without it --min-length/--max-length or the model's own apply.
    #[arg(long, value_enum, value_name = "LENGTH")]
    pub summary_length: Option<SummaryLengthFlag>,
    /// At most N sentences per summary (also the size of an --extractive summary; default 3).
    #[arg(long, value_name = "N")]
    pub summary_sentences: Option<usize>,
    /// Which text the summarizer reads: `ru`, the original (then the summary is translated),
    /// or `en`, the translation (with an English summarizer such as distilbart-cnn-12-6; the
    /// Russian summary is then the extract of source sentences that best covers it).
    #[arg(long, value_enum, default_value = "ru", value_name = "SIDE")]
    pub summarize_from: SummarySideFlag,
    /// Fast summaries with no summarizer model: the lead and key sentences, in both
    /// languages from the aligned translation.
    #[arg(long, conflicts_with_all = ["summary_length", "summarize_from"])]
    pub extractive: bool,
    /// LLM summarizers (GGUF): sample with this temperature instead of greedy decoding
    /// (default 0: greedy, the same summaries every run).
    #[arg(long, value_name = "T")]
    pub temperature: Option<f64>,
    /// LLM summarizers: sample only from the most likely tokens up to this total probability.
    #[arg(long, value_name = "P")]
    pub top_p: Option<f64>,
    /// LLM summarizers: the sampler's seed (the same seed gives the same summaries).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
}

impl SummaryFlags {
    /// Whether a summarizer model is needed at all.
    pub fn needs_summarizer(&self) -> bool {
        !self.extractive
    }

    /// The summarizer when none is named: the Russian default, or the English one for
    /// `--summarize-from en`.
    pub fn default_summarizer(&self) -> &'static str {
        match self.side() {
            SummarySide::Ru => DEFAULT_SUMMARIZER,
            SummarySide::En => DEFAULT_ENGLISH_SUMMARIZER,
        }
    }

    /// `--temperature`, `--top-p`, `--seed`.
    pub fn sampling(&self) -> Sampling {
        Sampling {
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
        }
    }

    /// `--summarize-from`.
    pub fn side(&self) -> SummarySide {
        self.summarize_from.into()
    }

    pub fn options(&self) -> SummaryOptions {
        SummaryOptions {
            side: self.side(),
            extractive: self.extractive,
            max_sentences: self.summary_sentences,
            ..SummaryOptions::default()
        }
    }

    /// The summarizer's overrides: the global flags, with `--summary-length` setting the
    /// token bounds when given.
    pub fn overrides(&self, global: &GlobalArgs) -> GenerationOverrides {
        let mut overrides = overrides(global);
        if let Some(length) = self.summary_length {
            let (min, max) = SummaryLength::from(length).token_bounds();
            overrides.min_new_tokens = Some(min);
            overrides.max_new_tokens = Some(max);
        }
        overrides
    }
}

/// The generation flags (`--beams`, `--max-length`, `--min-length`) as overrides.
pub fn overrides(global: &GlobalArgs) -> GenerationOverrides {
    GenerationOverrides {
        num_beams: global.beams,
        max_new_tokens: global.max_length,
        min_new_tokens: global.min_length,
        ..GenerationOverrides::default()
    }
}

/// `--encoding LABEL` into read options; an unknown label is a usage error (exit 2).
pub fn read_options(label: Option<&str>) -> Result<ReadOptions> {
    let encoding = label.map(encoding::by_label).transpose()?;
    Ok(ReadOptions { encoding })
}

/// Inputs named on the command line; a missing path is fatal (exit 2).
pub fn inputs(paths: &[PathBuf]) -> Result<Vec<Input>> {
    Ok(read::expand(paths)?)
}

/// The named inputs and their text, stdin for `-` or when none is named: UTF-8, with or
/// without a byte-order mark. The line-oriented commands read text as given; only the release
/// readers guess encodings.
pub fn read_utf8_inputs(paths: &[PathBuf]) -> Result<Vec<(Input, String)>> {
    let stdin = [PathBuf::from("-")];
    let paths = if paths.is_empty() { &stdin[..] } else { paths };
    paths
        .iter()
        .map(|path| match path.as_os_str() == "-" {
            true => Input::Stdin,
            false => Input::File(path.clone()),
        })
        .map(|input| read_utf8(&input).map(|text| (input, text)))
        .collect()
}

/// How a line-oriented command names an input in messages: the path, or `<stdin>`.
pub fn input_name(input: &Input) -> String {
    match input {
        Input::File(path) => path.display().to_string(),
        Input::Stdin => "<stdin>".to_string(),
    }
}

fn read_utf8(input: &Input) -> Result<String> {
    let mut bytes = Vec::new();
    let read = match input {
        Input::Stdin => std::io::stdin().lock().read_to_end(&mut bytes),
        Input::File(path) => std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)),
    };
    read.map_err(|err| Error::io(input_name(input), err))?;
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&bytes);
    String::from_utf8(bytes.to_vec()).map_err(|err| {
        Error::Input(crate::io::InputError::Other(format!(
            "{}: not UTF-8 (invalid byte at offset {}); convert it first, e.g. \
             `iconv -f WINDOWS-1251 -t UTF-8`, or use `mtsum run`, which detects encodings",
            input_name(input),
            err.utf8_error().valid_up_to()
        )))
    })
}

/// Every input line, in order, for `--lines` modes: one item per line, so the output can
/// have exactly one line per input line. Unreadable inputs are reported and skipped.
pub fn read_lines(
    inputs: &[Input],
    options: ReadOptions,
    observer: &dyn Observer,
) -> (Vec<String>, usize) {
    let mut lines = Vec::new();
    let mut failed = 0;
    for input in inputs {
        match read::read_text(input, options) {
            Ok(decoded) => lines.extend(decoded.text.lines().map(str::to_string)),
            Err(ReadFailure {
                error: crate::io::InputError::Empty,
                ..
            }) => {}
            Err(failure) => {
                failed += 1;
                observer
                    .release_finished(&failure.location, &failed_with(&failure.error.to_string()));
            }
        }
    }
    (lines, failed)
}

/// `--lines`: reports the failure of input line `number` (counted from 1 over all inputs).
pub fn line_failed(observer: &dyn Observer, number: usize, err: &Error) {
    observer.release_finished(&format!("line {number}"), &failed_with(&chain(err)));
}

fn failed_with(reason: &str) -> Finished {
    Finished::Failed {
        reason: reason.to_string(),
    }
}

/// `--stats` of the commands that write to stdout: everything after loading counts as
/// generation time.
pub fn print_stdout_stats(
    global: &GlobalArgs,
    load_seconds: f64,
    started: Instant,
    tokens: TokenCounts,
) {
    let seconds = started.elapsed().as_secs_f64();
    let timings = ReportTimings {
        load_seconds,
        generation_seconds: seconds,
        total_seconds: seconds + load_seconds,
        stages: None,
    };
    print_stats(
        global,
        &batch::stats_json(&timings, &Throughput::new(tokens, seconds)),
    );
}

/// `--stats`: one JSON object on stderr.
pub fn print_stats(global: &GlobalArgs, stats: &serde_json::Value) {
    if global.stats {
        eprintln!("{stats}");
    }
}

/// What `--names` does with the person names of the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum NamesMode {
    /// Report each name and how the translation rendered it.
    #[default]
    Report,
    /// Also translate again, with each name's ICAO transliteration as a constraint, a
    /// sentence whose translation lacks it (names a glossary term covers are left to it).
    Transliterate,
}
