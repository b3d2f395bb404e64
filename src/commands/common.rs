//! What `run`, `translate` and `summarize` share: turning the global flags into models and
//! generation settings, reading inputs, and reporting outcomes.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device};

use crate::cli::{GlobalArgs, Outcome};
use crate::generate::{GenerationOverrides, TextGenerator};
use crate::hub::{self, HubOptions, ResolvedModel};
use crate::io::read::{self, ReadOptions};
use crate::io::{encoding, Input, ReadFailure, ReadItem, ReleaseOutput};
use crate::pipeline::Pipeline;
use crate::progress::{chain, Finished, Observer};
use crate::{Error, Result};

/// The translator used when `--translator` is not given (a preset in `models/`).
pub const DEFAULT_TRANSLATOR: &str = "opus-mt-ru-en";
/// The summarizer used when `--summarizer` is not given (a preset in `models/`).
pub const DEFAULT_SUMMARIZER: &str = "rut5-base-sum-gazeta";

/// The loaded models of a command and how long loading took.
#[derive(Default)]
pub struct Models {
    pub translator: Option<Box<dyn TextGenerator>>,
    pub summarizer: Option<Box<dyn TextGenerator>>,
    pub load_seconds: f64,
}

impl Models {
    /// Resolves and loads the models a command needs. Any failure is fatal (exit 2): the
    /// message names the model and the file at fault.
    pub fn load(global: &GlobalArgs, translator: bool, summarizer: bool) -> Result<Self> {
        let started = Instant::now();
        // The hub issue adds fields (endpoint, cache, token) that default to the environment.
        #[allow(clippy::needless_update)]
        let hub_options = HubOptions {
            offline: global.offline || std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1"),
            progress: !global.quiet,
            ..HubOptions::default()
        };
        let device = global.device.open()?;
        let dtype = crate::device::choose_dtype(&device, global.dtype);
        let load = |spec: Option<&String>, default: &str| -> Result<Box<dyn TextGenerator>> {
            let spec = spec.map_or(default, String::as_str);
            let resolved = hub::resolve(spec, &hub_options)?;
            load_generator(&resolved, &device, dtype, global.batch_tokens)
        };
        let translator = match translator {
            true => Some(load(global.translator.as_ref(), DEFAULT_TRANSLATOR)?),
            false => None,
        };
        let summarizer = match summarizer {
            true => Some(load(global.summarizer.as_ref(), DEFAULT_SUMMARIZER)?),
            false => None,
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

/// Loads a resolved model for generation on `device` in `dtype`.
///
/// INTEGRATION POINT: the generation engine (#5) provides the loader (tokenizer + model +
/// generation config behind `TextGenerator`): with it merged this body becomes
/// `Ok(Box::new(crate::generate::runner::load(resolved, device, dtype, batch_tokens)?))`.
/// Until then no model can run, and the command stops here with exit code 2.
fn load_generator(
    resolved: &ResolvedModel,
    _device: &Device,
    _dtype: DType,
    _batch_tokens: Option<usize>,
) -> Result<Box<dyn TextGenerator>> {
    Err(Error::Usage(format!(
        "cannot load model {} ({}): this mtsum has no generation engine yet",
        resolved.repo,
        resolved.dir.display()
    )))
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
/// stdout forms of `translate` and `summarize`). Failures are reported and the rest go on.
pub fn each_release(
    pipeline: &Pipeline,
    items: Vec<ReadItem>,
    observer: &dyn Observer,
    mut emit: impl FnMut(&ReleaseOutput),
) -> Outcome {
    let mut failed = 0;
    observer.batch_started(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let started = Instant::now();
        let result = item.map_err(|f| (f.location.clone(), f.error.to_string()));
        let processed = result.and_then(|release| {
            observer.release_started(index, &release.id);
            pipeline
                .process(&release, &release.id, observer)
                .map_err(|e| (release.id.clone(), chain(&e)))
        });
        match processed {
            Ok(output) => {
                emit(&output);
                let seconds = started.elapsed().as_secs_f64();
                observer.release_finished(&output.id, &Finished::Processed { seconds });
            }
            Err((label, reason)) => {
                failed += 1;
                observer.release_finished(&label, &failed_with(&reason));
            }
        }
    }
    observer.batch_finished();
    outcome(failed)
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
