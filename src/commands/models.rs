//! `mtsum models fetch|list|verify|inspect`: warm, inspect and check the model cache.

use clap::{Subcommand, ValueEnum};

use super::stdout::Stdout;
use crate::cli::{GlobalArgs, SummaryLengthFlag};
use crate::hub::{self, FileState, HubOptions, VerifyReport};
use crate::inspect::{self, InspectRole};
use crate::summary::SummaryLength;
use crate::Outcome;
use crate::{Error, Result};

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Download the default models (or the named ones) into the cache.
    ///
    /// With no MODEL: the translator and summarizer a run would use (--translator and
    /// --summarizer, else the default presets). Meant for warming a CI cache.
    Fetch {
        /// Hub id[@revision], preset name or local directory.
        models: Vec<String>,
    },
    /// List the models in the cache: revision, commit, size and whether a run can use them.
    List,
    /// Check cached files against the hub's checksums (offline: against the checksums their
    /// blob names carry).
    Verify {
        /// Models to check (default: every cached model).
        models: Vec<String>,
        /// Download bad or missing files again.
        #[arg(long)]
        repair: bool,
    },
    /// Say whether mtsum can run a model and how: family, weight file and format, tokenizer,
    /// every generation setting and where it comes from, the resolved commit. Exit 2 (with the
    /// reason) when it cannot run.
    ///
    /// With no MODEL: the translator and summarizer a run would use. The tokenizer is built and
    /// the weights loaded on --device in --dtype as a run would (--no-load skips loading).
    /// Downloads no weights: online, only the config and tokenizer files a cache lacks are
    /// fetched (all the files with --fetch); offline, only the cache is read.
    #[command(after_help = INSPECT_EXAMPLES)]
    Inspect(InspectArgs),
}

const INSPECT_EXAMPLES: &str = "\
Examples:
  mtsum models inspect                                  the default translator and summarizer
  mtsum models inspect --offline opus-mt-ru-en          from the cache only
  mtsum models inspect ./my-bart --role summarizer --beams 2
  mtsum models inspect --format json distilbart-cnn-12-6 | jq '.[0].generation'";

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// Hub id[@revision], preset name or local directory (default: the translator and
    /// summarizer a run would use).
    pub models: Vec<String>,
    /// Settings as this role runs them [default: the preset's role (translator or
    /// summarizer); for any other model `generate`, as `mtsum generate` runs it].
    #[arg(long, value_enum, value_name = "ROLE")]
    pub role: Option<RoleArg>,
    /// The summarizer's --summary-length, shown as flag settings (with --role summarizer).
    #[arg(long, value_enum, value_name = "LENGTH")]
    pub summary_length: Option<SummaryLengthFlag>,
    /// Output: `text` for people, `json` for scripts (an array, one object per model).
    #[arg(long, value_enum, default_value = "text", value_name = "FORMAT")]
    pub format: FormatArg,
    /// Download what a run needs, weights included, when the cache lacks it (as `models fetch`).
    #[arg(long)]
    pub fetch: bool,
    /// Do not load the weights: only find the weight file (fast on big models, but a missing
    /// tensor or a config value the loader refuses then goes unnoticed).
    #[arg(long)]
    pub no_load: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// As `mtsum generate` runs it: the repo's settings, the flags over them.
    Generate,
    /// As the pipeline's translator (the same settings as `generate`).
    Translator,
    /// As the pipeline's summarizer: config.json's task_specific_params.summarization and
    /// prefix apply too.
    Summarizer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Text,
    Json,
}

pub fn execute(cmd: ModelsCommand, global: &GlobalArgs) -> Result<Outcome> {
    let opts = global.hub_options();
    match cmd {
        ModelsCommand::Fetch { models } => fetch(&models, global, &opts),
        ModelsCommand::List => {
            Stdout::lock().write(&list_table(&opts))?;
            Ok(Outcome::Done)
        }
        ModelsCommand::Verify { models, repair } => {
            let reports = hub::verify(&models, &opts, repair)?;
            if reports.is_empty() {
                eprintln!("no cached models in {}", opts.cache_dir().display());
            }
            let mut stdout = Stdout::lock();
            for report in &reports {
                stdout.write(&describe_report(report))?;
            }
            Ok(if reports.iter().all(VerifyReport::is_good) {
                Outcome::Done
            } else {
                Outcome::SomeFailed
            })
        }
        ModelsCommand::Inspect(args) => inspect_models(&args, global, opts),
    }
}

/// Inspects each model, prints every report, then fails (exit 2) naming each model that
/// cannot run and why.
fn inspect_models(args: &InspectArgs, global: &GlobalArgs, opts: HubOptions) -> Result<Outcome> {
    let named: Vec<(String, Option<InspectRole>)> = if args.models.is_empty() {
        let roles = [Some(InspectRole::Translator), Some(InspectRole::Summarizer)];
        default_specs(global)?.into_iter().zip(roles).collect()
    } else {
        args.models.iter().map(|m| (m.clone(), None)).collect()
    };
    if args.fetch && opts.offline {
        return Err(Error::Usage(
            "--fetch downloads files, --offline forbids it: drop one of them".into(),
        ));
    }
    let opts = HubOptions {
        // Config and tokenizer files only, unless the user asks for the weights too.
        tokenizer_only: !args.fetch,
        ..opts
    };
    let load = match args.no_load {
        true => None,
        false => {
            let options = global.load_options();
            let (device, dtype) = options.open_device()?;
            Some((device, dtype, options.precision))
        }
    };
    let mut overrides = super::common::overrides(global);
    if let Some(length) = args.summary_length {
        let (min, max) = SummaryLength::from(length).token_bounds();
        overrides.min_new_tokens = Some(min);
        overrides.max_new_tokens = Some(max);
    }
    let mut reports = Vec::new();
    for (spec, default_role) in &named {
        if hub::is_gguf_spec(spec) {
            let device = load.as_ref().map(|(device, _, _)| device);
            reports.push(Inspected::Gguf(inspect_gguf(
                spec, &opts, args.fetch, device,
            )));
            continue;
        }
        let resolved = hub::resolve(spec, &opts);
        let role = match args.role {
            Some(RoleArg::Generate) => InspectRole::Generate,
            Some(RoleArg::Translator) => InspectRole::Translator,
            Some(RoleArg::Summarizer) => InspectRole::Summarizer,
            None => default_role
                .or_else(|| {
                    let preset = resolved.as_ref().ok()?.preset.as_ref()?;
                    InspectRole::of_preset(&preset.role)
                })
                .unwrap_or(InspectRole::Generate),
        };
        let resolved = match resolved {
            Ok(resolved) => resolved,
            Err(err) => {
                reports.push(Inspected::Seq2Seq(inspect::unresolved(spec, role, &err)));
                continue;
            }
        };
        reports.push(Inspected::Seq2Seq(inspect::inspect(&inspect::Request {
            spec,
            resolved: &resolved,
            role,
            overrides: &overrides,
            load: (load.as_ref()).map(|(device, dtype, precision)| (device, *dtype, *precision)),
        })));
    }
    match args.format {
        FormatArg::Json => Stdout::lock()
            .line(&serde_json::to_string_pretty(&reports).expect("reports serialize"))?,
        FormatArg::Text => {
            let texts: Vec<String> = reports.iter().map(Inspected::text).collect();
            Stdout::lock().write(&texts.join("\n"))?;
        }
    }
    let failed: Vec<String> = (reports.iter()).filter_map(Inspected::failure).collect();
    match failed.is_empty() {
        true => Ok(Outcome::Done),
        false => Err(Error::Usage(failed.join("\n"))),
    }
}

/// One model's inspection: a seq2seq model (config.json and weights) or a GGUF LLM.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Inspected {
    Seq2Seq(inspect::Report),
    Gguf(inspect::GgufReport),
}

impl Inspected {
    fn text(&self) -> String {
        match self {
            Self::Seq2Seq(report) => inspect::render_text(report),
            Self::Gguf(report) => inspect::render_gguf_text(report),
        }
    }

    /// `SPEC cannot run: reasons` when the model cannot run.
    fn failure(&self) -> Option<String> {
        let (runnable, model, problems) = match self {
            Self::Seq2Seq(r) => (r.runnable, &r.model, &r.problems),
            Self::Gguf(r) => (r.runnable, &r.model, &r.problems),
        };
        (!runnable).then(|| format!("{model} cannot run: {}", problems.join("; ")))
    }
}

/// Inspects a GGUF LLM. The file is the model's weights, so a hub file is read from the cache
/// unless `--fetch` (as for any model's weights); a local file is read where it is.
fn inspect_gguf(
    spec: &str,
    opts: &HubOptions,
    fetch: bool,
    device: Option<&candle_core::Device>,
) -> inspect::GgufReport {
    let cache_only = HubOptions {
        offline: opts.offline || !fetch,
        ..opts.clone()
    };
    let resolved = hub::resolve_gguf(spec, &cache_only);
    let local_file = spec.to_ascii_lowercase().ends_with(".gguf") && !spec.contains(':');
    let from_hub_cache = resolved.is_err() && !local_file && !fetch && !opts.offline;
    let mut report = inspect::inspect_gguf(spec, resolved, device);
    if from_hub_cache {
        report.problems.push(format!(
            "inspect reads a hub GGUF file from the cache only, since the file is the model's \
             weights: `mtsum models inspect --fetch {spec}` downloads it first"
        ));
    }
    report
}

/// Resolves each model (downloading what is missing) and prints `repo@revision commit dir`.
fn fetch(models: &[String], global: &GlobalArgs, opts: &HubOptions) -> Result<Outcome> {
    let specs = if models.is_empty() {
        default_specs(global)?
    } else {
        models.to_vec()
    };
    let mut stdout = Stdout::lock();
    for spec in &specs {
        if hub::is_gguf_spec(spec) {
            // One file of a GGUF repo: the line names the file itself.
            let model = hub::resolve_gguf(spec, opts)?;
            stdout.line(&format!(
                "{}@{} {} {}",
                model.repo,
                model.revision.as_deref().unwrap_or("-"),
                model.commit.as_deref().unwrap_or("-"),
                model.path.display()
            ))?;
            continue;
        }
        let model = hub::resolve(spec, opts)?;
        stdout.line(&format!(
            "{}@{} {} {}",
            model.repo,
            model.revision.as_deref().unwrap_or("-"),
            model.commit.as_deref().unwrap_or("-"),
            model.dir.display()
        ))?;
    }
    Ok(Outcome::Done)
}

/// The translator and summarizer a run would use.
fn default_specs(global: &GlobalArgs) -> Result<Vec<String>> {
    let pick = |chosen: &Option<String>, role: &str| -> Result<String> {
        match chosen {
            Some(spec) => Ok(spec.clone()),
            None => Ok(hub::default_preset(role)?.name),
        }
    };
    Ok(vec![
        pick(&global.translator, "translator")?,
        pick(&global.summarizer, "summarizer")?,
    ])
}

/// One line per cached snapshot.
fn list_table(opts: &HubOptions) -> String {
    let models = hub::cached_models(opts);
    if models.is_empty() {
        return format!("no models in {}\n", opts.cache_dir().display());
    }
    let mut rows = vec![[
        "MODEL".to_string(),
        "REVISION".into(),
        "COMMIT".into(),
        "SIZE".into(),
        "STATUS".into(),
    ]];
    for model in &models {
        for snapshot in &model.snapshots {
            let revisions: Vec<&str> = model
                .refs
                .iter()
                .filter(|(_, commit)| *commit == snapshot.commit)
                .map(|(name, _)| name.as_str())
                .collect();
            let status = if snapshot.missing.is_empty() {
                "complete".to_string()
            } else {
                format!("incomplete, missing {}", snapshot.missing.join(", "))
            };
            rows.push([
                model.repo.clone(),
                if revisions.is_empty() {
                    "-".into()
                } else {
                    revisions.join(",")
                },
                snapshot.commit.clone(),
                indicatif::HumanBytes(snapshot.size).to_string(),
                status,
            ]);
        }
    }
    format_table(&rows)
}

/// Left-aligned columns, two spaces apart; the last column is not padded.
fn format_table(rows: &[[String; 5]]) -> String {
    let widths: Vec<usize> = (0..5)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        for (c, cell) in row.iter().enumerate() {
            if c == 4 {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  ", width = widths[c]));
            }
        }
        out.push('\n');
    }
    out
}

fn describe_report(report: &VerifyReport) -> String {
    let source = if report.against_hub {
        "the hub's checksums"
    } else {
        "the checksums in the blob names (offline)"
    };
    let bad: Vec<String> = report
        .files
        .iter()
        .filter_map(|(file, state)| match state {
            FileState::Bad(why) => Some(format!("  bad: {file}: {why}\n")),
            _ => None,
        })
        .collect();
    let unchecked = report
        .files
        .iter()
        .filter(|(_, s)| *s == FileState::Unchecked)
        .count();
    let mut out = format!(
        "{} {}: {}, {} files checked against {source}{}{}\n",
        report.repo,
        report.commit,
        if report.is_good() { "ok" } else { "BAD" },
        report.files.len() - unchecked,
        if unchecked > 0 {
            format!(", {unchecked} unchecked")
        } else {
            String::new()
        },
        if report.repaired { ", repaired" } else { "" },
    );
    out.extend(bad);
    for missing in &report.missing {
        out.push_str(&format!("  missing: {missing}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_all_but_the_last_column() {
        let rows = [
            [
                "a".into(),
                "bb".into(),
                "c".into(),
                "d".into(),
                "e e".into(),
            ],
            [
                "aaa".into(),
                "b".into(),
                "c".into(),
                "dd".into(),
                "e".into(),
            ],
        ];
        assert_eq!(
            format_table(&rows),
            "a    bb  c  d   e e\naaa  b   c  dd  e\n"
        );
    }
}
