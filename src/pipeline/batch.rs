//! The batch: every release read, skipped when its outputs are up to date, processed
//! otherwise in groups whose model calls are pooled (`pool`), each release written as soon as
//! its group is done; then the digest and the run report. One bad release never stops the
//! others.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::pool::{Calls, Pool};
use super::shard::{Plan, Shard, ShardInfo};
use super::Pipeline;
use crate::io::output::{ModelsUsed, TokenCounts};
use crate::io::{OutputDir, ReadFailure, ReadItem, Release, ReleaseOutput};
use crate::progress::{chain, Finished, Observer};
use crate::Outcome;
use crate::Result;

/// Segments (translator inputs, or whatever a release's first model call takes) that a group
/// of releases gathers before it is processed; the releases of a group share one engine call
/// per phase, and are written when the group is done.
///
/// Why 512: at the default token budgets (4096 on the CPU) one engine batch of press-release
/// sentences (30-40 tokens) holds about 100 rows greedy or 25 with 4 beams, so a group is 5 to
/// 20 full batches: enough for the length sort to pair sentences of equal length and for the
/// last, partly filled batch to be a small share. At the throughput the README measures on two
/// cores (300-900 generated tokens per second) it is still only a minute or two of work, so
/// outputs keep appearing as the run goes and a killed run loses little.
pub const POOL_SEGMENTS: usize = 512;

/// Options of the batch that are not the pipeline's.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// `--side-by-side`: add the sentence table to each Markdown page.
    pub side_by_side: bool,
    /// `--force`: redo releases whose outputs are up to date.
    pub force: bool,
    /// Seconds spent loading models, for the report.
    pub load_seconds: f64,
    /// Order of the releases in the digest.
    pub digest_order: DigestOrder,
    /// Segments a group of releases gathers before it is processed ([`POOL_SEGMENTS`]); 1
    /// processes each release alone.
    pub pool_segments: usize,
    /// `--shard K/N`: process only the releases this shard owns (see `shard`).
    pub shard: Option<Shard>,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            side_by_side: false,
            force: false,
            load_seconds: 0.0,
            digest_order: DigestOrder::default(),
            pool_segments: POOL_SEGMENTS,
            shard: None,
        }
    }
}

/// `report.json`: what CI reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub mtsum_version: String,
    pub started_at: String,
    pub finished_at: String,
    /// A sharded run's shard, batch and owned inputs (absent when unsharded).
    #[serde(flatten)]
    pub sharding: Option<ShardInfo>,
    pub counts: Counts,
    /// Every release (or unreadable input) in input order.
    pub releases: Vec<ReportEntry>,
    pub failures: Vec<Failure>,
    pub timings: ReportTimings,
    pub throughput: Throughput,
    pub models: ModelsUsed,
    pub settings: serde_json::Value,
    /// With a glossary: its terms over every release written or up to date.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub terms: Option<TermCounts>,
    /// `merge`: the shards this report was built from.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub merged_from: Vec<super::merge::MergedShard>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub total: usize,
    pub processed: usize,
    pub skipped: usize,
    pub failed: usize,
    /// Releases written or up to date whose outputs need a human look before they go out
    /// (a number missing from a translation, a guard's fall-back; see
    /// `pipeline::review_reasons`): what `run --strict` exits 1 for. Absent when none.
    #[serde(skip_serializing_if = "is_zero", default)]
    pub needs_review: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Read and found fit to process (`--dry-run`).
    Checked,
    Processed,
    Skipped,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportEntry {
    pub id: Option<String>,
    /// Place in the whole batch's input order (0-based, every input counted), the same in a
    /// sharded run as in one run.
    #[serde(default)]
    pub position: usize,
    /// `path` or `path:line`.
    pub source: String,
    /// File stem of the outputs (`<file>.md`, `<file>.json`), when written.
    pub file: Option<String>,
    pub status: Status,
    /// What CI should know about a release that did not fail, e.g. an encoding guessed
    /// without confidence.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub warnings: Vec<String>,
    /// With a glossary: its terms found in the release and whether the translations hold them.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub terms: Option<TermCounts>,
}

/// Glossary terms found in source sentences: `hits` whose translation holds the entry's
/// English, `misses` whose translation does not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermCounts {
    pub hits: usize,
    pub misses: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// The release id, or its location when the id is unknown.
    pub release: String,
    pub source: String,
    pub reason: String,
    pub hint: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReportTimings {
    pub load_seconds: f64,
    pub generation_seconds: f64,
    pub total_seconds: f64,
    /// Where a run's time went (absent in merged reports and in reports from before these
    /// existed): so a slow run shows whether the models or the text work around them cost.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub stages: Option<StageSeconds>,
}

/// Seconds of a run by stage. The model stages are the releases' shares of the pooled calls
/// (they add up to the engine's time); what `total_seconds` holds beyond these is the rest
/// of the text work (guards, alignment, summary chunking, extracts) and the scheduling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StageSeconds {
    /// Cutting release bodies and titles into sentences and model-sized pieces (with the
    /// translator's tokenizer counting).
    pub segment_seconds: f64,
    /// Translator calls.
    pub translate_seconds: f64,
    /// Summarizer calls.
    pub summarize_seconds: f64,
    /// Writing the releases' Markdown and JSON and the digest.
    pub write_seconds: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    #[serde(flatten)]
    pub tokens: TokenCounts,
    /// Generated tokens per second of generation time.
    pub tokens_per_second: f64,
}

impl Counts {
    /// The counts of the report's entries (`--dry-run`'s checked ones count only in `total`).
    pub(crate) fn of(entries: &[ReportEntry]) -> Counts {
        let count = |status| entries.iter().filter(|e| e.status == status).count();
        Counts {
            total: entries.len(),
            processed: count(Status::Processed),
            skipped: count(Status::Skipped),
            failed: count(Status::Failed),
            needs_review: 0,
        }
    }
}

impl Report {
    /// 0 when everything was processed or skipped, 1 when some releases failed.
    pub fn outcome(&self) -> Outcome {
        Outcome::of_failures(self.counts.failed)
    }

    /// The `--stats` object.
    pub fn stats(&self) -> serde_json::Value {
        stats_json(&self.timings, &self.throughput)
    }
}

impl Throughput {
    /// Counts and the generated tokens per second of `generation_seconds`.
    pub fn new(tokens: TokenCounts, generation_seconds: f64) -> Self {
        let tokens_per_second = match generation_seconds {
            s if s > 0.0 => tokens.generated_tokens as f64 / s,
            _ => 0.0,
        };
        Throughput {
            tokens,
            tokens_per_second,
        }
    }
}

/// The `--stats` object: load and generation seconds, segments, tokens, tokens per second.
pub fn stats_json(timings: &ReportTimings, throughput: &Throughput) -> serde_json::Value {
    serde_json::json!({
        "load_seconds": timings.load_seconds,
        "generation_seconds": timings.generation_seconds,
        "total_seconds": timings.total_seconds,
        "segments": throughput.tokens.segments,
        "input_tokens": throughput.tokens.input_tokens,
        "generated_tokens": throughput.tokens.generated_tokens,
        "tokens_per_second": throughput.tokens_per_second,
    })
}

/// Runs the batch into `out`. Releases to process are gathered in input order into groups of
/// about `options.pool_segments` segments; a group's model calls are pooled, and each of its
/// releases is written (Markdown, then JSON) as soon as the group is done. The digest and
/// report come last, in input order. Fails only when the digest or report cannot be written:
/// a release's own failure is recorded in the report.
pub fn run(
    pipeline: &Pipeline,
    items: Vec<ReadItem>,
    out: &OutputDir,
    options: &BatchOptions,
    observer: &dyn Observer,
) -> Result<Report> {
    let started_at = SystemTime::now();
    let started = Instant::now();
    let plan = Plan::new(&items, options.shard);
    let out = &out.with_batch_tag(options.shard.map(|s| s.file_tag()));
    let mut batch = Batch {
        pipeline,
        out,
        options,
        observer,
        plan: &plan,
        records: Vec::new(),
        tokens: TokenCounts::default(),
        generation_seconds: 0.0,
        stages: StageSeconds::default(),
    };
    observer.batch_started(plan.owned_count());
    let calls = Calls::default();
    let mut pool = Pool::new(&calls, options.pool_segments);
    for (index, item) in items.into_iter().enumerate() {
        if !plan.owns(index) {
            continue;
        }
        let Some(job) = batch.admit(index, item) else {
            continue;
        };
        if let Some(done) = pool.start(job.processed(pipeline, &calls), observer) {
            batch.write_group(done);
        }
    }
    batch.write_group(pool.finish(observer));
    observer.batch_finished();
    batch.records.sort_by_key(|record| record.index);
    let outputs = batch.records.iter().filter_map(|r| r.output.as_ref());
    let outputs = digest_order(outputs, options.digest_order);
    let writing = Instant::now();
    out.write_digest(&outputs, &iso_date(started_at))?;
    batch.stages.write_seconds += writing.elapsed().as_secs_f64();
    batch.stages.segment_seconds = pipeline.segment_seconds();
    let report = batch.report(started_at, started);
    out.write_report(&report)?;
    Ok(report)
}

/// The order of releases in the digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DigestOrder {
    /// As the inputs were read.
    #[default]
    Input,
    /// By date, oldest first; releases without a date follow in input order.
    Date,
}

/// The outputs in digest order. Dates are compared as given (ISO dates sort as text), and
/// the sort is stable, so equal or missing dates keep the input order.
pub(crate) fn digest_order<'o>(
    outputs: impl Iterator<Item = &'o ReleaseOutput>,
    order: DigestOrder,
) -> Vec<&'o ReleaseOutput> {
    let mut ordered: Vec<&ReleaseOutput> = outputs.collect();
    if order == DigestOrder::Date {
        ordered.sort_by_key(|o| (o.date.is_none(), o.date.clone()));
    }
    ordered
}

/// `run --dry-run`: reads every input and writes a report of what would be processed (and
/// under which file name) and what cannot be read. Loads no model, writes no release.
/// With `shard`, only the inputs that shard owns are checked.
pub fn check(
    items: Vec<ReadItem>,
    out: &OutputDir,
    shard: Option<Shard>,
    observer: &dyn Observer,
) -> Result<Report> {
    let started_at = SystemTime::now();
    let started = Instant::now();
    let plan = Plan::new(&items, shard);
    let out = &out.with_batch_tag(shard.map(|s| s.file_tag()));
    let (mut releases, mut failures) = (Vec::new(), Vec::new());
    observer.batch_started(plan.owned_count());
    for (position, item) in items.into_iter().enumerate() {
        if !plan.owns(position) {
            continue;
        }
        match item {
            Ok(release) => {
                let what = describe(&release);
                observer.release_finished(&release.id, &Finished::Checked { what });
                releases.push(ReportEntry {
                    id: Some(release.id.clone()),
                    position,
                    source: location(&release),
                    file: plan.file(position).map(str::to_string),
                    status: Status::Checked,
                    warnings: warnings(&release),
                    terms: None,
                });
            }
            Err(failure) => {
                let mut entry = failed_entry(&failure);
                entry.0.position = position;
                observer.release_finished(
                    &entry.1.release,
                    &Finished::Failed {
                        reason: entry.1.reason.clone(),
                    },
                );
                releases.push(entry.0);
                failures.push(entry.1);
            }
        }
    }
    observer.batch_finished();
    let report = Report {
        mtsum_version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: iso_time(started_at),
        finished_at: iso_time(SystemTime::now()),
        sharding: plan.info(
            &ModelsUsed::default(),
            &serde_json::json!({ "dry_run": true }),
        ),
        counts: Counts::of(&releases),
        releases,
        failures,
        timings: ReportTimings {
            total_seconds: started.elapsed().as_secs_f64(),
            ..ReportTimings::default()
        },
        throughput: Throughput::default(),
        models: ModelsUsed::default(),
        settings: serde_json::json!({ "dry_run": true }),
        terms: None,
        merged_from: Vec::new(),
    };
    out.write_report(&report)?;
    Ok(report)
}

/// Warnings for the report: an encoding detected without confidence.
fn warnings(release: &Release) -> Vec<String> {
    let source = &release.source;
    match source.encoding_confident {
        true => Vec::new(),
        false => vec![format!(
            "encoding {} was detected without confidence; check the text or pass --encoding",
            source.encoding
        )],
    }
}

/// `markdown, windows-1251 (detected, not sure), 6 blocks, 412 words`.
fn describe(release: &Release) -> String {
    let source = &release.source;
    let sure = if source.encoding_confident {
        ""
    } else {
        ", not sure"
    };
    let words: usize = release
        .blocks
        .iter()
        .map(|b| b.text.split_whitespace().count())
        .sum();
    format!(
        "{}, {} ({}{sure}), {} blocks, {words} words",
        source.format.name(),
        source.encoding,
        source.encoding_method,
        release.blocks.len()
    )
}

/// The report entry and failure of an input that gave no release.
fn failed_entry(failure: &ReadFailure) -> (ReportEntry, Failure) {
    let release = failure
        .id
        .clone()
        .unwrap_or_else(|| failure.location.clone());
    (
        ReportEntry {
            id: failure.id.clone(),
            position: 0,
            source: failure.location.clone(),
            file: None,
            status: Status::Failed,
            warnings: Vec::new(),
            terms: None,
        },
        Failure {
            release,
            source: failure.location.clone(),
            reason: failure.error.to_string(),
            hint: failure.error.hint().to_string(),
        },
    )
}

struct Batch<'a> {
    pipeline: &'a Pipeline<'a>,
    out: &'a OutputDir,
    options: &'a BatchOptions,
    observer: &'a dyn Observer,
    /// Every input's name and owner.
    plan: &'a Plan,
    /// What became of every input, in the order they were recorded: a group's releases are
    /// recorded after the inputs read while the group filled.
    records: Vec<Record>,
    tokens: TokenCounts,
    generation_seconds: f64,
    stages: StageSeconds,
}

/// What became of one input, with its place in the input order.
struct Record {
    index: usize,
    entry: ReportEntry,
    failure: Option<Failure>,
    /// The output of a processed or skipped release, for the digest.
    output: Option<ReleaseOutput>,
}

/// A release to process.
struct Job {
    index: usize,
    release: Release,
    /// File stem of its outputs.
    file: String,
}

impl Job {
    /// The release processed as a task of a group; the job comes back with the output.
    async fn processed<'m>(
        self,
        pipeline: &Pipeline<'m>,
        calls: &Calls<'m>,
    ) -> (Job, Result<ReleaseOutput>) {
        let done = pipeline
            .process_with(&self.release, &self.file, calls)
            .await;
        (self, done)
    }
}

impl Batch<'_> {
    /// Records an input that needs no processing (unreadable, or its outputs up to date) and
    /// returns the release to process otherwise.
    fn admit(&mut self, index: usize, item: ReadItem) -> Option<Job> {
        let release = match item {
            Ok(release) => release,
            Err(failure) => {
                let (mut entry, failure) = failed_entry(&failure);
                entry.position = index;
                self.observer.release_started(index, &failure.release);
                self.record_failure(index, entry, failure);
                return None;
            }
        };
        self.observer.release_started(index, &release.id);
        let file = self.plan.file(index).unwrap_or_default().to_string();
        let Some(mut previous) = self.up_to_date(&release, &file) else {
            return Some(Job {
                index,
                release,
                file,
            });
        };
        let mut entry = ReportEntry {
            id: Some(release.id.clone()),
            position: index,
            source: location(&release),
            file: Some(file),
            status: Status::Skipped,
            warnings: warnings(&release),
            terms: None,
        };
        // The release's place in the batch may have moved (inputs added or removed): its JSON
        // says where it is now, the only part of it that does not come from the fingerprint.
        if previous.position != Some(index) {
            previous.position = Some(index);
            if let Err(err) = self.out.write_release_json(&previous) {
                let failure = Failure {
                    release: release.id.clone(),
                    source: entry.source.clone(),
                    reason: chain(&err),
                    hint: "check that the output folder is writable".into(),
                };
                (entry.file, entry.status) = (None, Status::Failed);
                self.record_failure(index, entry, failure);
                return None;
            }
        }
        self.record(index, entry, None, Some(previous));
        self.observer
            .release_finished(&release.id, &Finished::Skipped);
        None
    }

    /// Writes the releases of a finished group in input order.
    fn write_group(&mut self, group: Vec<(Job, Result<ReleaseOutput>)>) {
        for (job, done) in group {
            self.write(job, done);
        }
    }

    /// Writes a processed release (Markdown, then JSON) and records it, or records its failure.
    fn write(&mut self, job: Job, done: Result<ReleaseOutput>) {
        let writing = Instant::now();
        let done = done.and_then(|mut output| {
            output.position = Some(job.index);
            self.out.write_release(&output, self.options.side_by_side)?;
            Ok(output)
        });
        self.stages.write_seconds += writing.elapsed().as_secs_f64();
        let Job {
            index,
            release,
            file,
        } = job;
        let mut entry = ReportEntry {
            id: Some(release.id.clone()),
            position: index,
            source: location(&release),
            file: None,
            status: Status::Failed,
            warnings: warnings(&release),
            terms: None,
        };
        match done {
            Ok(output) => {
                self.tokens += output.tokens;
                self.generation_seconds +=
                    output.timings.translate_seconds + output.timings.summarize_seconds;
                self.stages.translate_seconds += output.timings.translate_seconds;
                self.stages.summarize_seconds += output.timings.summarize_seconds;
                entry.warnings.extend(output.warnings.iter().cloned());
                entry.file = Some(file);
                entry.status = Status::Processed;
                let seconds = output.timings.total_seconds;
                self.record(index, entry, None, Some(output));
                self.observer
                    .release_finished(&release.id, &Finished::Processed { seconds });
            }
            Err(err) => {
                let failure = Failure {
                    release: release.id.clone(),
                    source: entry.source.clone(),
                    reason: chain(&err),
                    hint: "see the reason; a rerun retries only the releases not yet done".into(),
                };
                self.record_failure(index, entry, failure);
            }
        }
    }

    /// The earlier output when it was made from the same input, models and settings.
    fn up_to_date(&self, release: &Release, file: &str) -> Option<ReleaseOutput> {
        if self.options.force {
            return None;
        }
        let previous = self.out.previous(file)?;
        (previous.fingerprint == self.pipeline.fingerprint(release)).then_some(previous)
    }

    fn record(
        &mut self,
        index: usize,
        mut entry: ReportEntry,
        failure: Option<Failure>,
        output: Option<ReleaseOutput>,
    ) {
        if !self.pipeline.options().glossary.is_empty() {
            entry.terms = output.as_ref().map(|output| {
                let (hits, misses) = super::term_counts(output);
                TermCounts { hits, misses }
            });
        }
        self.records.push(Record {
            index,
            entry,
            failure,
            output,
        });
    }

    fn record_failure(&mut self, index: usize, entry: ReportEntry, failure: Failure) {
        let how = Finished::Failed {
            reason: failure.reason.clone(),
        };
        self.observer.release_finished(&failure.release, &how);
        self.record(index, entry, Some(failure), None);
    }

    /// The report of the records, which are in input order by now.
    fn report(self, started_at: SystemTime, started: Instant) -> Report {
        let needs_review = self
            .records
            .iter()
            .filter_map(|record| record.output.as_ref())
            .filter(|output| !super::review_reasons(output).is_empty())
            .count();
        let terms = (!self.pipeline.options().glossary.is_empty()).then(|| {
            let per_release = self.records.iter().filter_map(|r| r.entry.terms);
            per_release.fold(TermCounts::default(), |total, t| TermCounts {
                hits: total.hits + t.hits,
                misses: total.misses + t.misses,
            })
        });
        let (entries, failures): (Vec<ReportEntry>, Vec<Option<Failure>>) = self
            .records
            .into_iter()
            .map(|record| (record.entry, record.failure))
            .unzip();
        let (models, settings) = (self.pipeline.models(), self.pipeline.settings());
        Report {
            mtsum_version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: iso_time(started_at),
            finished_at: iso_time(SystemTime::now()),
            sharding: self.plan.info(&models, &settings),
            counts: Counts {
                needs_review,
                ..Counts::of(&entries)
            },
            releases: entries,
            failures: failures.into_iter().flatten().collect(),
            timings: ReportTimings {
                load_seconds: self.options.load_seconds,
                generation_seconds: self.generation_seconds,
                total_seconds: started.elapsed().as_secs_f64(),
                stages: Some(self.stages),
            },
            throughput: Throughput::new(self.tokens, self.generation_seconds),
            models,
            settings,
            terms,
            merged_from: Vec::new(),
        }
    }
}

/// `path` or `path:line`.
fn location(release: &Release) -> String {
    match release.source.line {
        Some(line) => format!("{}:{line}", release.source.path),
        None => release.source.path.clone(),
    }
}

/// `YYYY-MM-DD` in UTC.
pub fn iso_date(time: SystemTime) -> String {
    iso_time(time)[..10].to_string()
}

/// `YYYY-MM-DDThh:mm:ssZ` in UTC (days to civil date: Howard Hinnant's algorithm).
pub fn iso_time(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_utc_times() {
        assert_eq!(iso_time(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_251_199);
        assert_eq!(iso_time(t), "2024-02-29T23:59:59Z");
        assert_eq!(iso_date(t), "2024-02-29");
    }
}
