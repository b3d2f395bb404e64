//! Progress and messages: indicatif bars on a terminal, plain log lines otherwise.
//!
//! The pipeline and the loader report to an `Observer`; the binary picks how that looks, from a
//! plain [`Verbosity`]: bars (a batch bar with ETA and a stage bar with tokens per second) when
//! stderr is a terminal, one plain line per release when it is not (CI logs), only errors when
//! quiet. Messages go through the bars' own printer, so they never tear a bar.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::generate::TokenCounts;

/// How much the user wants to hear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verbosity {
    /// Only errors.
    Quiet,
    /// Progress and warnings.
    #[default]
    Normal,
    /// Also one line per model call.
    Verbose,
}

/// Formats an error with its whole source chain: `outer: inner: root`.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Which model is working.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Translate,
    Summarize,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Translate => "translate",
            Stage::Summarize => "summarize",
        }
    }
}

/// How a release ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Finished {
    Processed {
        seconds: f64,
    },
    Skipped,
    /// Read and fit to process (`run --dry-run`); `what` describes the input.
    Checked {
        what: String,
    },
    Failed {
        reason: String,
    },
}

/// What the pipeline and the batch driver report as they go. Every method has a silent
/// default, so an observer implements only what it shows.
pub trait Observer: Send + Sync {
    fn batch_started(&self, _releases: usize) {}
    fn release_started(&self, _index: usize, _id: &str) {}
    /// `done` of `total` inputs of the current model call are finished.
    fn stage(&self, _stage: Stage, _done: usize, _total: usize) {}
    /// A model call finished with these counts.
    fn generated(&self, _stage: Stage, _counts: TokenCounts, _seconds: f64) {}
    fn release_finished(&self, _id: &str, _how: &Finished) {}
    /// A warning or note for the user.
    fn message(&self, _text: &str) {}
    fn batch_finished(&self) {}
}

/// Shows nothing.
pub struct Silent;
impl Observer for Silent {}

/// The observer for `verbosity`: bars on a terminal, log lines otherwise, errors only when
/// quiet.
pub fn observer_for(verbosity: Verbosity) -> Box<dyn Observer> {
    if verbosity != Verbosity::Quiet && std::io::stderr().is_terminal() {
        Box::new(Bars::new())
    } else {
        Box::new(LogLines::new(verbosity))
    }
}

/// One plain line per release on stderr (CI); with `quiet`, only failures; with `verbose`,
/// also one line per model call.
pub struct LogLines {
    quiet: bool,
    verbose: bool,
}

impl LogLines {
    /// Plain lines at `verbosity`; also what shows messages while no bar is drawn yet (model
    /// loading).
    pub fn new(verbosity: Verbosity) -> Self {
        LogLines {
            quiet: verbosity == Verbosity::Quiet,
            verbose: verbosity == Verbosity::Verbose,
        }
    }
}

impl Observer for LogLines {
    fn generated(&self, stage: Stage, counts: TokenCounts, seconds: f64) {
        if self.verbose && !self.quiet {
            eprintln!(
                "         {} {} segments, {} -> {} tokens in {seconds:.2} s",
                stage.name(),
                counts.segments,
                counts.input_tokens,
                counts.generated_tokens
            );
        }
    }

    fn release_finished(&self, id: &str, how: &Finished) {
        match how {
            Finished::Processed { seconds } if !self.quiet => {
                eprintln!("done     {id} ({seconds:.1} s)")
            }
            Finished::Skipped if !self.quiet => eprintln!("skipped  {id} (outputs up to date)"),
            Finished::Checked { what } if !self.quiet => eprintln!("ok       {id} ({what})"),
            Finished::Failed { reason } => eprintln!("failed   {id}: {reason}"),
            _ => {}
        }
    }

    fn message(&self, text: &str) {
        if !self.quiet {
            eprintln!("{text}");
        }
    }
}

/// A batch bar (releases, ETA) over a stage bar (segments, tokens per second).
pub struct Bars {
    multi: MultiProgress,
    batch: ProgressBar,
    stage: ProgressBar,
    /// Generated tokens and generation seconds so far, for the tokens-per-second figure.
    rate: Mutex<(usize, f64)>,
    started: Instant,
}

impl Bars {
    fn new() -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let batch = multi.add(ProgressBar::new(0));
        batch.set_style(
            ProgressStyle::with_template(
                "{bar:30.cyan/blue} {pos}/{len} releases  ETA {eta}  {msg}",
            )
            .expect("a valid template"),
        );
        let stage = multi.add(ProgressBar::new(0));
        stage.set_style(
            ProgressStyle::with_template("{prefix:>9} {bar:30} {pos}/{len} segments  {msg}")
                .expect("a valid template"),
        );
        batch.enable_steady_tick(Duration::from_millis(200));
        Bars {
            multi,
            batch,
            stage,
            rate: Mutex::new((0, 0.0)),
            started: Instant::now(),
        }
    }
}

impl Observer for Bars {
    fn batch_started(&self, releases: usize) {
        self.batch.set_length(releases as u64);
    }

    fn release_started(&self, _index: usize, id: &str) {
        self.batch.set_message(id.to_string());
    }

    fn stage(&self, stage: Stage, done: usize, total: usize) {
        self.stage.set_prefix(stage.name());
        self.stage.set_length(total as u64);
        self.stage.set_position(done as u64);
    }

    fn generated(&self, _stage: Stage, counts: TokenCounts, seconds: f64) {
        let mut rate = self.rate.lock().unwrap_or_else(|e| e.into_inner());
        rate.0 += counts.generated_tokens;
        rate.1 += seconds;
        if rate.1 > 0.0 {
            self.stage
                .set_message(format!("{:.0} tokens/s", rate.0 as f64 / rate.1));
        }
    }

    fn release_finished(&self, id: &str, how: &Finished) {
        self.batch.inc(1);
        match how {
            Finished::Failed { reason } => {
                let _ = self.multi.println(format!("failed   {id}: {reason}"));
            }
            Finished::Checked { what } => {
                let _ = self.multi.println(format!("ok       {id} ({what})"));
            }
            _ => {}
        }
    }

    fn message(&self, text: &str) {
        let _ = self.multi.println(text);
    }

    fn batch_finished(&self) {
        self.stage.finish_and_clear();
        self.batch.finish_and_clear();
        eprintln!(
            "{} releases in {:.1} s",
            self.batch.position(),
            self.started.elapsed().as_secs_f64()
        );
    }
}
