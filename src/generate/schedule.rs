//! The batch scheduler: inputs pooled, sorted by length, and cut into batches by a token budget,
//! as CTranslate2 does with `batch_type="tokens"`. Sorting keeps padding small (a batch's rows
//! are all about as long as its longest); the budget bounds the memory of one batch whatever the
//! lengths. Results come back in input order.

use crate::Result;

/// Default token budget of one batch on the CPU: hypotheses times the longest source, and at
/// most 3072 / 64 = 48 hypotheses. Measured with `mtsum bench` (real-size Marian, 64 inputs of
/// 15-41 tokens, 32 new tokens, 2 threads; tokens/s and peak memory as a multiple of the
/// weights): 3072 gave greedy ~1770 at 1.42x and beam 4 ~540 at 1.42x; 4096 (64 hypotheses)
/// ~1760 at 1.53x and ~536 at 1.53x; 6144 (96 hypotheses) beam 4 ~560 at 1.73x. Throughput
/// flattens from about 48 rows on, while the decoder's caches grow with every row.
pub const DEFAULT_BATCH_TOKENS_CPU: usize = 3072;

/// Default budget on a GPU, where wide batches are what keeps it busy (not measured here).
pub const DEFAULT_BATCH_TOKENS_GPU: usize = 16384;

/// The default budget for `device`.
pub fn default_batch_tokens(device: &candle_core::Device) -> usize {
    if device.is_cpu() {
        DEFAULT_BATCH_TOKENS_CPU
    } else {
        DEFAULT_BATCH_TOKENS_GPU
    }
}

/// What one batch may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Hypotheses (rows times beams) times the longest source: bounds the encoder's memory.
    pub tokens: usize,
    /// Hypotheses, however short the sources: bounds the decoder's memory, which grows with
    /// them (each holds its self-attention cache and a row of logits; opus-mt: about 0.8 MB
    /// for 32 tokens, plus 0.25 MB).
    pub hypotheses: usize,
}

impl Budget {
    /// Source tokens of budget per hypothesis: `--batch-tokens` N allows N / 64 hypotheses.
    pub const TOKENS_PER_HYPOTHESIS: usize = 64;

    /// The budget that `--batch-tokens tokens` sets.
    pub fn of_tokens(tokens: usize) -> Self {
        Self {
            tokens,
            hypotheses: (tokens / Self::TOKENS_PER_HYPOTHESIS).max(1),
        }
    }
}

/// Splits inputs of the given token `lengths` into batches of input indices. Inputs are sorted
/// longest first (stable, so equal lengths keep input order), and a batch grows while its
/// hypotheses (`rows * cost_per_row`) stay within both limits of `budget`; a single input
/// always fits.
pub fn plan(lengths: &[usize], budget: Budget, cost_per_row: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut longest = 0;
    for i in order {
        let wider = longest.max(lengths[i]);
        let hypotheses = (current.len() + 1) * cost_per_row;
        let full = hypotheses * wider > budget.tokens || hypotheses > budget.hypotheses;
        if !current.is_empty() && full {
            batches.push(std::mem::take(&mut current));
            longest = 0;
        }
        longest = longest.max(lengths[i]);
        current.push(i);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// Runs `work` on every batch of `plan(lengths, ...)` and returns its outputs in input order.
/// `progress(done, total)` is called after each batch with the number of inputs finished.
pub fn run<T>(
    lengths: &[usize],
    budget: Budget,
    cost_per_row: usize,
    mut work: impl FnMut(&[usize]) -> Result<Vec<T>>,
    progress: &dyn Fn(usize, usize),
) -> Result<Vec<T>> {
    let mut slots: Vec<Option<T>> = (0..lengths.len()).map(|_| None).collect();
    let mut done = 0;
    for batch in plan(lengths, budget, cost_per_row) {
        let outputs = work(&batch)?;
        assert_eq!(
            outputs.len(),
            batch.len(),
            "one output per input of a batch"
        );
        for (i, out) in batch.iter().zip(outputs) {
            slots[*i] = Some(out);
        }
        done += batch.len();
        progress(done, lengths.len());
    }
    Ok(slots
        .into_iter()
        .map(|s| s.expect("every input is in one batch"))
        .collect())
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    fn tokens(tokens: usize) -> Budget {
        Budget {
            tokens,
            hypotheses: usize::MAX,
        }
    }

    #[test]
    fn batches_are_sorted_and_within_budget() {
        let lengths = [3, 10, 4, 10, 1, 7, 2];
        let batches = plan(&lengths, tokens(20), 1);
        assert_eq!(batches, vec![vec![1, 3], vec![5, 2], vec![0, 6, 4]]);
        for batch in &batches {
            let longest = batch.iter().map(|&i| lengths[i]).max().unwrap();
            assert!(batch.len() * longest <= 20);
        }
        // Beams multiply the cost of a row.
        assert_eq!(plan(&lengths, tokens(20), 4).len(), 6);
        // An input over the budget still gets a batch of its own.
        assert_eq!(plan(&[50, 1], tokens(20), 1), vec![vec![0], vec![1]]);
    }

    #[test]
    fn short_inputs_are_capped_by_hypotheses() {
        let lengths = [2; 10];
        let budget = Budget::of_tokens(256);
        assert_eq!(budget.hypotheses, 4);
        let sizes =
            |beams| -> Vec<usize> { plan(&lengths, budget, beams).iter().map(Vec::len).collect() };
        assert_eq!(sizes(1), vec![4, 4, 2]);
        assert_eq!(sizes(2), vec![2, 2, 2, 2, 2]);
        // A tiny budget still allows one hypothesis per batch.
        assert_eq!(Budget::of_tokens(10).hypotheses, 1);
    }

    #[test]
    fn results_come_back_in_input_order_with_progress() {
        let lengths = [5, 1, 9, 3, 3];
        let seen = RefCell::new(Vec::new());
        let out = run(
            &lengths,
            tokens(10),
            1,
            |batch| Ok(batch.iter().map(|&i| lengths[i] * 100).collect()),
            &|done, total| seen.borrow_mut().push((done, total)),
        )
        .unwrap();
        assert_eq!(out, vec![500, 100, 900, 300, 300]);
        let seen = seen.into_inner();
        assert_eq!(seen.last(), Some(&(5, 5)));
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
