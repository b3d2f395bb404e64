//! Releases processed for a stream rather than an output folder (the stdout forms of
//! `translate` and `summarize`): outputs handed over in input order as their group finishes,
//! failures reported, and nothing more started once nobody reads.

use super::batch::POOL_SEGMENTS;
use super::pool::{Calls, Pool};
use super::Pipeline;
use crate::io::{ReadItem, ReleaseOutput};
use crate::progress::{chain, Finished, Observer};
use crate::{Outcome, Result};

/// Processes every release without an output folder, handing each output to `emit` (the
/// stdout forms of `translate` and `summarize`) in input order. The model calls of a group of
/// releases are pooled as in `mtsum run` ([`Pool`], groups of [`POOL_SEGMENTS`]). Failures are reported and the
/// rest go on; once `emit` returns false (nobody reads stdout any more), no more releases are
/// started.
pub fn each_release(
    pipeline: &Pipeline,
    items: Vec<ReadItem>,
    observer: &dyn Observer,
    mut emit: impl FnMut(&ReleaseOutput) -> bool,
) -> Outcome {
    let mut failed = 0;
    let mut reading = true;
    let mut hand_over = |done: Vec<(String, Result<ReleaseOutput>)>, failed: &mut usize| {
        for (id, done) in done {
            match done {
                Ok(output) => {
                    reading = reading && emit(&output);
                    let seconds = output.timings.total_seconds;
                    observer.release_finished(&id, &Finished::Processed { seconds });
                }
                Err(err) => {
                    *failed += 1;
                    observer.release_finished(&id, &failed_with(&chain(&err)));
                }
            }
        }
        reading
    };
    observer.batch_started(items.len());
    let calls = Calls::default();
    let mut pool = Pool::new(&calls, POOL_SEGMENTS);
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
        let task = async move {
            let done = pipeline.process_with(&release, &release.id, calls).await;
            (release.id, done)
        };
        if let Some(done) = pool.start(task, observer) {
            if !hand_over(done, &mut failed) {
                break;
            }
        }
    }
    hand_over(pool.finish(observer), &mut failed);
    observer.batch_finished();
    Outcome::of_failures(failed)
}

fn failed_with(reason: &str) -> Finished {
    Finished::Failed {
        reason: reason.to_string(),
    }
}
