//! `mtsum models fetch|list|verify`: warm, inspect and check the model cache.

use clap::Subcommand;

use super::stdout::Stdout;
use crate::cli::GlobalArgs;
use crate::hub::{self, FileState, HubOptions, VerifyReport};
use crate::Outcome;
use crate::Result;

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
    }
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
