//! What the subcommands share: turning the global flags into models and generation settings,
//! reading inputs (releases for `run`, `translate` and `summarize`; UTF-8 text for `segment`,
//! `tokenize` and `generate`), and reporting outcomes.

use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use crate::cli::{GlobalArgs, Outcome};
use crate::generate::{runner, GenerationOverrides, Role, TextGenerator};
use crate::hub::{self, HubOptions};
use crate::io::read::{self, ReadOptions};
use crate::io::{encoding, Input, ReadFailure, ReadItem, ReleaseOutput};
use crate::pipeline::pool::{Calls, Group};
use crate::pipeline::{batch, Pipeline, SummaryOptions};
use crate::progress::{chain, Finished, Observer};
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
        let started = Instant::now();
        let hub_options = HubOptions::from_global(global);
        let device = global.device.open()?;
        let dtype = crate::device::choose_dtype(&device, global.dtype);
        let load = |spec: Option<&String>, default: &str, role| -> Result<Box<dyn TextGenerator>> {
            let spec = spec.map_or(default, String::as_str);
            let resolved = hub::resolve(spec, &hub_options)?;
            let runner = runner::load_as(&resolved, &device, dtype, global.batch_tokens, role)?;
            Ok(Box::new(runner))
        };
        let translator = match translator {
            true => Some(load(
                global.translator.as_ref(),
                DEFAULT_TRANSLATOR,
                Role::Generate,
            )?),
            false => None,
        };
        // The summarizer takes config.json's task_specific_params.summarization and prefix, as
        // transformers' summarization pipeline did.
        let summarizer = summarizer
            .map(|default| load(global.summarizer.as_ref(), default, Role::Summarizer))
            .transpose()?;
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

/// How summaries are made; shared by `run` and `summarize`.
#[derive(Debug, Clone, Args)]
pub struct SummaryFlags {
    /// Summary length: sets the summarizer's generated-token bounds (short 8-60, medium
    /// 24-120, long 48-200); without it --min-length/--max-length or the model's own apply.
    #[arg(long, value_enum, value_name = "LENGTH")]
    pub summary_length: Option<SummaryLength>,
    /// At most N sentences per summary (also the size of an --extractive summary; default 3).
    #[arg(long, value_name = "N")]
    pub summary_sentences: Option<usize>,
    /// Which text the summarizer reads: `ru`, the original (then the summary is translated),
    /// or `en`, the translation (with an English summarizer such as distilbart-cnn-12-6; the
    /// Russian summary is then the extract of source sentences that best covers it).
    #[arg(long, value_enum, default_value = "ru", value_name = "SIDE")]
    pub summarize_from: SummarySide,
    /// Fast summaries with no summarizer model: the lead and key sentences, in both
    /// languages from the aligned translation.
    #[arg(long, conflicts_with_all = ["summary_length", "summarize_from"])]
    pub extractive: bool,
}

impl SummaryFlags {
    /// Whether a summarizer model is needed at all.
    pub fn needs_summarizer(&self) -> bool {
        !self.extractive
    }

    /// The summarizer when none is named: the Russian default, or the English one for
    /// `--summarize-from en`.
    pub fn default_summarizer(&self) -> &'static str {
        match self.summarize_from {
            SummarySide::Ru => DEFAULT_SUMMARIZER,
            SummarySide::En => DEFAULT_ENGLISH_SUMMARIZER,
        }
    }

    pub fn options(&self) -> SummaryOptions {
        SummaryOptions {
            side: self.summarize_from,
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
            let (min, max) = length.token_bounds();
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

/// Processes every release without an output folder, handing each output to `emit` (the
/// stdout forms of `translate` and `summarize`) in input order. The model calls of a group of
/// releases are pooled as in `mtsum run` (see `pipeline::pool`). Failures are reported and the
/// rest go on.
pub fn each_release(
    pipeline: &Pipeline,
    items: Vec<ReadItem>,
    observer: &dyn Observer,
    mut emit: impl FnMut(&ReleaseOutput),
) -> Outcome {
    let mut failed = 0;
    observer.batch_started(items.len());
    let calls = Calls::default();
    let mut group = Group::new(&calls);
    for (index, item) in items.into_iter().enumerate() {
        let release = match item {
            Ok(release) => release,
            Err(failure) => {
                failed += 1;
                observer
                    .release_finished(&failure.location, &failed_with(&failure.error.to_string()));
                continue;
            }
        };
        observer.release_started(index, &release.id);
        let calls = &calls;
        group.start(async move {
            let done = pipeline.process_with(&release, &release.id, calls).await;
            (release.id, done)
        });
        if group.waiting_inputs() >= batch::POOL_SEGMENTS {
            let full = std::mem::replace(&mut group, Group::new(calls));
            failed += emit_group(full, observer, &mut emit);
        }
    }
    failed += emit_group(group, observer, &mut emit);
    observer.batch_finished();
    outcome(failed)
}

/// Runs a group to its end and emits its outputs in input order; returns how many failed.
fn emit_group(
    group: Group<'_, '_, (String, Result<ReleaseOutput>)>,
    observer: &dyn Observer,
    emit: &mut impl FnMut(&ReleaseOutput),
) -> usize {
    let mut failed = 0;
    for (id, done) in group.finish(observer) {
        match done {
            Ok(output) => {
                emit(&output);
                let seconds = output.timings.total_seconds;
                observer.release_finished(&id, &Finished::Processed { seconds });
            }
            Err(err) => {
                failed += 1;
                observer.release_finished(&id, &failed_with(&chain(&err)));
            }
        }
    }
    failed
}

fn failed_with(reason: &str) -> Finished {
    Finished::Failed {
        reason: reason.to_string(),
    }
}

/// Done when nothing failed.
pub fn outcome(failed: usize) -> Outcome {
    match failed {
        0 => Outcome::Done,
        _ => Outcome::SomeFailed,
    }
}

/// `--stats`: one JSON object on stderr.
pub fn print_stats(global: &GlobalArgs, stats: &serde_json::Value) {
    if global.stats {
        eprintln!("{stats}");
    }
}
