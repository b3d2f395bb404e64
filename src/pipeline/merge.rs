//! `mtsum merge`: the output folders of a sharded run (or one folder the shards shared) put
//! back together into what one unsharded run writes: every release's files, the digest in the
//! whole batch's input order, and one report with the summed counts, every failure and
//! warning, and the shards it was built from.
//!
//! Nothing is merged unless the shards are provably parts of one batch: each shard's report
//! (`report.shard-K-of-N.json`) names its shard, the batch size and the batch fingerprint
//! (inputs, models, settings; see `shard`), every shard 1..N must be there exactly once, and
//! their inputs must cover the batch without overlap.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::batch::{
    digest_order, Counts, DigestOrder, Failure, Report, ReportEntry, ReportTimings, Status,
    TermCounts, Throughput,
};
use super::shard::{Shard, ShardInfo};
use crate::io::output::TokenCounts;
use crate::io::write::write_atomic;
use crate::io::{OutputDir, ReleaseOutput};
use crate::{Error, Result};

/// Options of `merge` that are not read from the shards.
#[derive(Debug, Clone, Default)]
pub struct MergeOptions {
    /// Order of the releases in the merged digest (as `run --digest-order`).
    pub digest_order: DigestOrder,
}

/// One shard a merged report was built from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergedShard {
    /// `K/N`.
    pub shard: String,
    /// The shard's report, as found.
    pub report: String,
    pub started_at: String,
    pub finished_at: String,
    pub counts: Counts,
}

/// Why shards cannot be merged. Each names the files at fault and what to do.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error(
        "{}: no shard report (report.shard-K-of-N.json) in this folder; merge takes the --out \
         folders of `mtsum run --shard K/N`",
        dir.display()
    )]
    NoShards { dir: PathBuf },
    #[error(
        "{}: not a folder; merge takes the --out folders of the shards (or the one folder they \
         shared), not their files",
        path.display()
    )]
    NotAFolder { path: PathBuf },
    #[error("{}: not a shard report: {reason}", path.display())]
    BadReport { path: PathBuf, reason: String },
    #[error(
        "{}: a --dry-run report; merge needs shards that processed their releases \
         (run them without --dry-run)",
        path.display()
    )]
    DryRun { path: PathBuf },
    #[error(
        "{} and {} are shards of different runs ({what}); merge only the shards of one run, \
         or rerun the odd ones with the same inputs, models and settings",
        first.display(), other.display()
    )]
    DifferentRuns {
        first: PathBuf,
        other: PathBuf,
        what: String,
    },
    #[error("shard {shard} appears twice: {} and {}; keep one of them", first.display(), other.display())]
    Twice {
        shard: String,
        first: PathBuf,
        other: PathBuf,
    },
    #[error("{}", missing_message(missing))]
    Missing { missing: Vec<Shard> },
    #[error("{}: {reason}", path.display())]
    Inconsistent { path: PathBuf, reason: String },
}

impl From<MergeError> for crate::Error {
    fn from(err: MergeError) -> Self {
        crate::Error::Merge(Box::new(err))
    }
}

/// `shard 2/3 is missing ...` or `shards 2/3 and 3/3 are missing ...`.
fn missing_message(missing: &[Shard]) -> String {
    let names: Vec<String> = missing.iter().map(Shard::to_string).collect();
    let (what, verb) = match names.as_slice() {
        [one] => (format!("shard {one}"), "is"),
        [init @ .., last] => (format!("shards {} and {last}", init.join(", ")), "are"),
        [] => (String::new(), "are"),
    };
    let tag = missing[0].file_tag();
    format!(
        "{what} {verb} missing: no report.{tag}.json in the folders given; run it \
         (`mtsum run ... --shard {}`) or name its --out folder",
        missing[0]
    )
}

/// A shard's report and where it was found.
struct ShardRun {
    dir: PathBuf,
    path: PathBuf,
    shard: Shard,
    report: Report,
    info: ShardInfo,
}

/// One input of the batch, from the shard that owned it.
struct Slot<'a> {
    entry: ReportEntry,
    failure: Option<Failure>,
    run: &'a ShardRun,
}

/// Merges the shards found in `dirs` into `out` and returns the merged report (also written as
/// `out/report.json`). Errors when the shards are not the complete set of one run's shards;
/// the releases that failed in a shard are the report's failures, as in `run`.
pub fn merge(dirs: &[PathBuf], out: &OutputDir, options: &MergeOptions) -> Result<Report> {
    let runs = find_shards(dirs)?;
    check_one_run(&runs)?;
    let slots = slots(&runs)?;
    // Every release is checked before anything is written, so a refused merge writes nothing.
    let written = |slot: &&Slot| matches!(slot.entry.status, Status::Processed | Status::Skipped);
    let outputs = slots
        .iter()
        .enumerate()
        .filter(|(_, slot)| written(slot))
        .map(|(position, slot)| checked_release(slot, position))
        .collect::<Result<Vec<ReleaseOutput>>>()?;
    let out_root = canonical(out.root());
    for slot in slots.iter().filter(written) {
        copy_release(slot, out, &out_root)?;
    }
    let ordered = digest_order(outputs.iter(), options.digest_order);
    let started_at = runs.iter().map(|r| &r.report.started_at).min().cloned();
    let started_at = started_at.unwrap_or_default();
    out.write_digest(&ordered, started_at.get(..10).unwrap_or(&started_at))?;
    let report = merged_report(&runs, slots, started_at);
    out.write_report(&report)?;
    Ok(report)
}

/// Every shard report in the folders, by shard; the same file named twice counts once.
fn find_shards(dirs: &[PathBuf]) -> Result<Vec<ShardRun>> {
    let mut found: BTreeMap<usize, ShardRun> = BTreeMap::new();
    for dir in dirs {
        if dir.is_file() {
            return Err(MergeError::NotAFolder { path: dir.clone() }.into());
        }
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        let mut names: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut any = false;
        for name in names {
            let Some(tag) = name
                .strip_prefix("report.")
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            let Some(shard) = Shard::from_file_tag(tag) else {
                continue;
            };
            any = true;
            let run = read_shard(dir, &dir.join(&name), shard)?;
            match found.get(&shard.index) {
                Some(seen) if canonical(&seen.path) == canonical(&run.path) => {}
                Some(seen) if seen.report == run.report => {}
                Some(seen) => {
                    return Err(MergeError::Twice {
                        shard: shard.to_string(),
                        first: seen.path.clone(),
                        other: run.path,
                    }
                    .into())
                }
                None => {
                    found.insert(shard.index, run);
                }
            }
        }
        if !any {
            return Err(MergeError::NoShards { dir: dir.clone() }.into());
        }
    }
    Ok(found.into_values().collect())
}

fn read_shard(dir: &Path, path: &Path, shard: Shard) -> Result<ShardRun> {
    let bad = |reason: String| MergeError::BadReport {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let report: Report =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("{e}; is it mtsum's?")))?;
    let Some(info) = report.sharding.clone() else {
        return Err(bad("it names no shard (no `shard` field)".into()).into());
    };
    if info.shard != shard.to_string() {
        return Err(bad(format!(
            "it says it is shard {}, its name says {shard}; was it renamed?",
            info.shard
        ))
        .into());
    }
    if report.settings.get("dry_run") == Some(&serde_json::Value::Bool(true)) {
        return Err(MergeError::DryRun {
            path: path.to_path_buf(),
        }
        .into());
    }
    Ok(ShardRun {
        dir: dir.to_path_buf(),
        path: path.to_path_buf(),
        shard,
        report,
        info,
    })
}

/// The shards are 1..N of one N, of one batch, by one mtsum version, none missing.
fn check_one_run(runs: &[ShardRun]) -> Result<()> {
    let first = &runs[0];
    for run in &runs[1..] {
        let what = if run.shard.count != first.shard.count {
            format!(
                "shard {} of a split into {} and shard {} of a split into {}",
                first.shard, first.shard.count, run.shard, run.shard.count
            )
        } else if run.info.batch_fingerprint != first.info.batch_fingerprint {
            "their batch fingerprints differ: other inputs, models or settings".to_string()
        } else if run.info.batch_size != first.info.batch_size {
            format!(
                "batches of {} and {} inputs",
                first.info.batch_size, run.info.batch_size
            )
        } else if run.report.mtsum_version != first.report.mtsum_version {
            format!(
                "made by mtsum {} and {}",
                first.report.mtsum_version, run.report.mtsum_version
            )
        } else {
            continue;
        };
        return Err(MergeError::DifferentRuns {
            first: first.path.clone(),
            other: run.path.clone(),
            what,
        }
        .into());
    }
    let count = first.shard.count;
    let missing: Vec<Shard> = (1..=count)
        .filter(|k| !runs.iter().any(|r| r.shard.index == *k))
        .map(|index| Shard { index, count })
        .collect();
    if !missing.is_empty() {
        return Err(MergeError::Missing { missing }.into());
    }
    Ok(())
}

/// Every input of the batch at its position, from the shard that owned it: the shards must
/// cover the batch without overlap.
fn slots(runs: &[ShardRun]) -> Result<Vec<Slot<'_>>> {
    let size = runs[0].info.batch_size;
    let mut slots: Vec<Option<Slot>> = (0..size).map(|_| None).collect();
    for run in runs {
        let inconsistent = |reason: String| MergeError::Inconsistent {
            path: run.path.clone(),
            reason,
        };
        // A report lists one failure per failed entry, in the entries' order.
        let mut failures = run.report.failures.iter().cloned();
        for entry in &run.report.releases {
            let failure = match entry.status {
                Status::Failed => Some(failures.next().ok_or_else(|| {
                    inconsistent("fewer failures than failed releases".to_string())
                })?),
                _ => None,
            };
            let position = entry.position;
            let Some(slot) = slots.get_mut(position) else {
                return Err(inconsistent(format!(
                    "input {position} is outside the batch of {size}"
                ))
                .into());
            };
            if let Some(other) = slot {
                return Err(inconsistent(format!(
                    "input {position} of the batch is also in {}; the shards overlap",
                    other.run.path.display()
                ))
                .into());
            }
            *slot = Some(Slot {
                entry: entry.clone(),
                failure,
                run,
            });
        }
    }
    slots
        .into_iter()
        .enumerate()
        .map(|(position, slot)| {
            slot.ok_or_else(|| {
                MergeError::Inconsistent {
                    path: runs[0].path.clone(),
                    reason: format!(
                        "input {position} of the batch is in no shard's report; were the \
                         reports edited?"
                    ),
                }
                .into()
            })
        })
        .collect()
}

/// A processed or skipped release's output in its shard's folder, checked to be the one the
/// shard's report names: its JSON parses and is at `position`, and its Markdown is there.
fn checked_release(slot: &Slot, position: usize) -> Result<ReleaseOutput> {
    let file = slot.entry.file.as_deref().unwrap_or_default();
    let json_path = slot.run.dir.join(format!("{file}.json"));
    let md_path = slot.run.dir.join(format!("{file}.md"));
    let json = std::fs::read(&json_path).map_err(|e| Error::io(&json_path, e))?;
    let output: ReleaseOutput =
        serde_json::from_slice(&json).map_err(|e| MergeError::Inconsistent {
            path: json_path.clone(),
            reason: format!("not a release's JSON ({e}); rerun its shard"),
        })?;
    if output.position != Some(position) {
        return Err(MergeError::Inconsistent {
            path: json_path,
            reason: format!(
                "its release is input {} of its batch, but {} lists it as input {position}: the \
                 folder holds outputs of another run; rerun the shard",
                output.position.map_or("?".to_string(), |p| p.to_string()),
                slot.run.path.display()
            ),
        }
        .into());
    }
    if !md_path.is_file() {
        return Err(MergeError::Inconsistent {
            path: md_path,
            reason: "missing, though its JSON is there; rerun the shard".into(),
        }
        .into());
    }
    Ok(output)
}

/// A release's Markdown and JSON, copied from its shard's folder into `out` (unless that is
/// the same folder).
fn copy_release(slot: &Slot, out: &OutputDir, out_root: &Path) -> Result<()> {
    if canonical(&slot.run.dir) == out_root {
        return Ok(());
    }
    let file = slot.entry.file.as_deref().unwrap_or_default();
    for ext in ["md", "json"] {
        let from = slot.run.dir.join(format!("{file}.{ext}"));
        let bytes = std::fs::read(&from).map_err(|e| Error::io(&from, e))?;
        write_atomic(&out.path(file, ext), &bytes)?;
    }
    Ok(())
}

/// The report one run would have written: entries and failures in input order, counts of the
/// whole batch, models and settings of the shards (equal, by their fingerprint). Timings: the
/// shards' load and generation seconds summed, and the longest shard's total.
fn merged_report(runs: &[ShardRun], slots: Vec<Slot>, started_at: String) -> Report {
    let mut tokens = TokenCounts::default();
    let mut timings = ReportTimings::default();
    for run in runs {
        tokens += run.report.throughput.tokens;
        timings.load_seconds += run.report.timings.load_seconds;
        timings.generation_seconds += run.report.timings.generation_seconds;
        timings.total_seconds = timings.total_seconds.max(run.report.timings.total_seconds);
    }
    let merged_from = runs
        .iter()
        .map(|run| MergedShard {
            shard: run.shard.to_string(),
            report: run.path.display().to_string(),
            started_at: run.report.started_at.clone(),
            finished_at: run.report.finished_at.clone(),
            counts: run.report.counts,
        })
        .collect();
    let finished_at = runs.iter().map(|r| &r.report.finished_at).max().cloned();
    let (entries, failures): (Vec<ReportEntry>, Vec<Option<Failure>>) =
        slots.into_iter().map(|s| (s.entry, s.failure)).unzip();
    let terms = runs.iter().any(|r| r.report.terms.is_some()).then(|| {
        let per_release = entries.iter().filter_map(|e| e.terms);
        per_release.fold(TermCounts::default(), |total, t| TermCounts {
            hits: total.hits + t.hits,
            misses: total.misses + t.misses,
        })
    });
    let first = &runs[0].report;
    Report {
        mtsum_version: first.mtsum_version.clone(),
        started_at,
        finished_at: finished_at.unwrap_or_default(),
        sharding: None,
        counts: Counts {
            // The shards hold disjoint releases: their releases to review add up.
            needs_review: runs.iter().map(|r| r.report.counts.needs_review).sum(),
            ..Counts::of(&entries)
        },
        terms,
        releases: entries,
        failures: failures.into_iter().flatten().collect(),
        throughput: Throughput::new(tokens, timings.generation_seconds),
        timings,
        models: first.models.clone(),
        settings: first.settings.clone(),
        merged_from,
    }
}

/// The path with links and `..` resolved, to tell whether two names are one file or folder.
fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}
