//! The command line: clap structs for the global flags and the subcommands, the value enums
//! the flags take, and their mapping into the library's plain option structs (load options,
//! verbosity, hub options, summary options). Only this module and `commands/` know clap; the
//! library below them sees plain values. Each subcommand's own flags live beside its
//! implementation in `commands/`; exit codes are [`crate::outcome`]'s.

use std::process::ExitCode;

use candle_core::DType;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::commands;
use crate::device::DeviceSpec;
use crate::hub::{HubOptions, Notes};
use crate::loader::LoadOptions;
use crate::models::WeightPrecision;
use crate::pipeline::batch::DigestOrder;
use crate::progress::Verbosity;
use crate::summary::{SummaryLength, SummarySide};

const EXAMPLES: &str = "\
Examples:
  mtsum run releases/ --out out/            translate and summarize a folder of releases
  mtsum run releases/ --out out/ --shard 2/3   the second of three shards (or --shard auto)
  mtsum merge out/ --out digest/            put the shards back together
  mtsum translate release.txt               English translation to stdout
  mtsum translate --lines < sentences.txt   one translated line per input line
  mtsum summarize --lines < docs.txt        one summary line per input line
  mtsum models fetch                        download the default models into the cache
  mtsum models inspect                      will the default models run, and with which settings
  mtsum segment release.txt                 show how a release is cut into sentences
";

/// Russian press releases into English translations and short bilingual summaries.
#[derive(Debug, Parser)]
#[command(name = "mtsum", version, about, after_help = EXAMPLES)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand understands.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Translator: hub id[@revision], preset name (see `models/`) or local directory.
    #[arg(long, global = true, value_name = "MODEL")]
    pub translator: Option<String>,
    /// Summarizer: hub id[@revision], preset name or local directory.
    #[arg(long, global = true, value_name = "MODEL")]
    pub summarizer: Option<String>,
    /// Where models run: auto, cpu, cuda, cuda:N or metal.
    #[arg(long, global = true, default_value = "auto", value_name = "DEVICE")]
    pub device: DeviceSpec,
    /// Floating-point type (default: f32 on the CPU, f16 on a GPU); int8: linear layers in
    /// int8 on the CPU, faster and slightly less faithful than f32.
    #[arg(long, global = true, value_enum)]
    pub dtype: Option<DTypeFlag>,
    /// CPU threads to use (default: all cores).
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<usize>,
    /// Beam width (default: the model's generation config).
    #[arg(long, global = true, value_name = "N")]
    pub beams: Option<usize>,
    /// Most tokens to generate per segment (like transformers' max_new_tokens).
    #[arg(long, global = true, value_name = "N")]
    pub max_length: Option<usize>,
    /// Fewest tokens to generate per segment (like transformers' min_new_tokens).
    #[arg(long, global = true, value_name = "N")]
    pub min_length: Option<usize>,
    /// Token budget of one batch: inputs times their longest source, and at most N / 32
    /// hypotheses (inputs times beams) [default: 2048 on the CPU, 16384 on a GPU; with
    /// --dtype int8, 2048 tokens and 128 hypotheses].
    #[arg(long, global = true, value_name = "N")]
    pub batch_tokens: Option<usize>,
    /// Make no network call: use only the local cache (also HF_HUB_OFFLINE=1).
    #[arg(long, global = true)]
    pub offline: bool,
    /// Print only errors.
    #[arg(long, short, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print more detail.
    #[arg(long, short, global = true)]
    pub verbose: bool,
    /// Print timing and throughput as one JSON object on stderr at the end.
    #[arg(long, global = true)]
    pub stats: bool,
}

impl GlobalArgs {
    /// `--quiet` / `--verbose`.
    pub fn verbosity(&self) -> Verbosity {
        if self.quiet {
            Verbosity::Quiet
        } else if self.verbose {
            Verbosity::Verbose
        } else {
            Verbosity::Normal
        }
    }

    /// `--offline`, and download progress bars unless `--quiet`.
    pub fn hub_options(&self) -> HubOptions {
        let quiet = self.quiet;
        HubOptions {
            offline: self.offline,
            progress: !quiet,
            notes: match quiet {
                true => Notes::default(),
                false => Notes::new(|text| eprintln!("{text}")),
            },
            ..HubOptions::default()
        }
    }

    /// Where and how models are loaded: hub options, `--device`, `--dtype`, `--batch-tokens`.
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            hub: self.hub_options(),
            device: self.device,
            dtype: self.dtype.map(DType::from),
            precision: self
                .dtype
                .map_or(WeightPrecision::Float, DTypeFlag::precision),
            batch_tokens: self.batch_tokens,
        }
    }
}

/// `--dtype`: the floating-point type of the weights and activations, or int8 weights in the
/// linear layers with f32 activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DTypeFlag {
    F32,
    F16,
    Bf16,
    /// int8 linear layers, f32 everywhere else (CPU only).
    Int8,
}

impl DTypeFlag {
    /// How the linear layers hold their weights.
    pub fn precision(self) -> WeightPrecision {
        match self {
            Self::Int8 => WeightPrecision::Int8,
            Self::F32 | Self::F16 | Self::Bf16 => WeightPrecision::Float,
        }
    }
}

impl From<DTypeFlag> for DType {
    fn from(flag: DTypeFlag) -> DType {
        match flag {
            // int8 weights run between f32 activations.
            DTypeFlag::F32 | DTypeFlag::Int8 => DType::F32,
            DTypeFlag::F16 => DType::F16,
            DTypeFlag::Bf16 => DType::BF16,
        }
    }
}

/// `--summary-length`: mapped to the generated-token bounds of the summarizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SummaryLengthFlag {
    Short,
    Medium,
    Long,
}

impl From<SummaryLengthFlag> for SummaryLength {
    fn from(flag: SummaryLengthFlag) -> SummaryLength {
        match flag {
            SummaryLengthFlag::Short => SummaryLength::Short,
            SummaryLengthFlag::Medium => SummaryLength::Medium,
            SummaryLengthFlag::Long => SummaryLength::Long,
        }
    }
}

/// `--summarize-from`: which side the summarizer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SummarySideFlag {
    /// Summarize the Russian original, then translate the summary (errors of the translation
    /// are not summarized).
    Ru,
    /// Summarize the English translation with an English summarizer.
    En,
}

impl From<SummarySideFlag> for SummarySide {
    fn from(flag: SummarySideFlag) -> SummarySide {
        match flag {
            SummarySideFlag::Ru => SummarySide::Ru,
            SummarySideFlag::En => SummarySide::En,
        }
    }
}

/// `--digest-order`: the order of releases in the digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DigestOrderFlag {
    /// As the inputs were read.
    Input,
    /// By date, oldest first; releases without a date follow in input order.
    Date,
}

impl From<DigestOrderFlag> for DigestOrder {
    fn from(flag: DigestOrderFlag) -> DigestOrder {
        match flag {
            DigestOrderFlag::Input => DigestOrder::Input,
            DigestOrderFlag::Date => DigestOrder::Date,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Translate and summarize every release; write Markdown, JSON, a digest and a report.
    Run(commands::run::RunArgs),
    /// Put the output folders of a sharded run (`run --shard K/N`) back together.
    Merge(commands::merge::MergeArgs),
    /// Translate releases (or, with --lines, each input line) to English.
    Translate(commands::translate::TranslateArgs),
    /// Summarize releases (or, with --lines, each input line) in Russian and English.
    Summarize(commands::summarize::SummarizeArgs),
    /// Download, list, verify and inspect models.
    #[command(subcommand)]
    Models(commands::models::ModelsCommand),
    /// Show the token ids a model's tokenizer gives (or decode ids).
    Tokenize(commands::tokenize::TokenizeArgs),
    /// Show how text is cut into paragraphs and sentences.
    Segment(commands::segment::SegmentArgs),
    /// Run any seq2seq model on each input line with its own generation settings.
    Generate(commands::generate::GenerateArgs),
    /// Measure throughput on a fixed batch.
    Bench(commands::bench::BenchArgs),
}

/// Parses the command line, runs the command and maps the result to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match commands::dispatch(cli) {
        Ok(outcome) => ExitCode::from(outcome.exit_code()),
        Err(err) => {
            eprintln!("error: {}", crate::progress::chain(&err));
            ExitCode::from(crate::outcome::FATAL)
        }
    }
}
