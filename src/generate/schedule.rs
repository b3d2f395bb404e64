//! The batch scheduler: inputs pooled, sorted by length, and cut into batches by a token budget,
//! as CTranslate2 does with `batch_type="tokens"`, and by a number of hypotheses. Sorting keeps
//! padding small (a batch's rows are all about as long as its longest); the budget bounds the
//! memory of one batch whatever the lengths and beams. Results come back in input order.

use super::Result;

/// Default token budget of one batch on the CPU: inputs times the longest source, and at most
/// 2048 / 32 = 64 hypotheses (inputs times beams). Measured with `mtsum bench` (real-size
/// Marian, 64 inputs of 15-41 tokens, 32 new tokens, 2 threads; tokens/s, and peak memory as a
/// multiple of the weights), greedy / beam 4: 2048 gave ~1570 at 1.46x / ~600 at 1.47x; 3072
/// with 48 hypotheses ~1600 at 1.46x / ~545 at 1.42x; 85 hypotheses beam 4 ~580 at 1.70x.
/// Beam search gains from wider batches up to about 64 rows; memory grows with every row.
pub const DEFAULT_BATCH_TOKENS_CPU: usize = 2048;

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

/// Hypotheses of one batch by default on the CPU with int8 weights (`--dtype int8`); the
/// token budget stays [`DEFAULT_BATCH_TOKENS_CPU`]. int8 weights take a quarter of f32's
/// memory, and a wider decoder step reads them once for more rows. Measured with `mtsum bench
/// --dtype int8 --beams 4` (real-size Marian, 64 inputs, 32 new tokens, 2 threads, three
/// alternating rounds, medians of tokens/s and peak memory) at ~27 / 12 source tokens:
/// `--batch-tokens 2048` (64 hypotheses) 597 / 693 at 299 / 287 MiB, this default (128) 697 /
/// 742 at 372 / 343 MiB, `--batch-tokens 8192` (256) 676 / 834 at 506 / 458 MiB. The token
/// budget is left alone: the summarizer's long inputs fill a batch by tokens
/// long before they reach 64 hypotheses, and a wider one ran slower (T5 int8, 8 inputs of
/// 400-600 tokens, 5 beams: 89-100 tokens/s at 2,048 tokens, 79-92 at 8,192).
pub const DEFAULT_HYPOTHESES_CPU_INT8: usize = 128;

/// The default budget for `device`, with int8 linear layers or not.
pub fn default_budget(device: &candle_core::Device, int8_weights: bool) -> Budget {
    let mut budget = Budget::of_tokens(default_batch_tokens(device));
    if int8_weights && device.is_cpu() {
        budget.hypotheses = DEFAULT_HYPOTHESES_CPU_INT8;
    }
    budget
}

/// What one batch may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Inputs times the longest source: bounds the encoder's work and memory, and the
    /// cross-attention keys and values the decoder keeps (once per input, whatever the beams).
    pub tokens: usize,
    /// Hypotheses (inputs times beams), however short the sources: bounds the decoder's own
    /// memory, which grows with them (each holds its self-attention cache and a row of logits;
    /// opus-mt: about 0.8 MB for 32 tokens, plus 0.25 MB).
    pub hypotheses: usize,
}

impl Budget {
    /// Source tokens of budget per hypothesis: `--batch-tokens` N allows N / 32 hypotheses.
    pub const TOKENS_PER_HYPOTHESIS: usize = 32;

    /// The budget that `--batch-tokens tokens` sets.
    pub fn of_tokens(tokens: usize) -> Self {
        Self {
            tokens,
            hypotheses: (tokens / Self::TOKENS_PER_HYPOTHESIS).max(1),
        }
    }
}

/// Splits inputs of the given token `lengths` into batches of input indices. Inputs are sorted
/// longest first (stable, so equal lengths keep input order), and a batch grows while
/// `inputs * longest` and `inputs * beams` stay within `budget`; a single input always fits.
pub fn plan(lengths: &[usize], budget: Budget, beams: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut longest = 0;
    for i in order {
        let wider = longest.max(lengths[i]);
        let inputs = current.len() + 1;
        let full = inputs * wider > budget.tokens || inputs * beams > budget.hypotheses;
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
    beams: usize,
    mut work: impl FnMut(&[usize]) -> Result<Vec<T>>,
    progress: &dyn Fn(usize, usize),
) -> Result<Vec<T>> {
    let mut slots: Vec<Option<T>> = (0..lengths.len()).map(|_| None).collect();
    let mut done = 0;
    for batch in plan(lengths, budget, beams) {
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
        // Beams do not change the source tokens a batch holds.
        assert_eq!(plan(&lengths, tokens(20), 4), batches);
        // An input over the budget still gets a batch of its own.
        assert_eq!(plan(&[50, 1], tokens(20), 1), vec![vec![0], vec![1]]);
    }

    #[test]
    fn short_inputs_are_capped_by_hypotheses() {
        let lengths = [2; 10];
        let budget = Budget::of_tokens(128);
        assert_eq!(budget.hypotheses, 4);
        let sizes =
            |beams| -> Vec<usize> { plan(&lengths, budget, beams).iter().map(Vec::len).collect() };
        assert_eq!(sizes(1), vec![4, 4, 2]);
        assert_eq!(sizes(2), vec![2, 2, 2, 2, 2]);
        // A tiny budget still allows one hypothesis per batch.
        assert_eq!(Budget::of_tokens(10).hypotheses, 1);
        // Beams beyond the cap still get a batch of one input.
        assert_eq!(sizes(8), vec![1; 10]);
    }

    #[test]
    fn int8_weights_widen_the_default_batch_by_hypotheses_only() {
        let cpu = candle_core::Device::Cpu;
        let f32_budget = default_budget(&cpu, false);
        let int8_budget = default_budget(&cpu, true);
        assert_eq!(f32_budget, Budget::of_tokens(DEFAULT_BATCH_TOKENS_CPU));
        assert_eq!(int8_budget.tokens, f32_budget.tokens);
        assert_eq!(int8_budget.hypotheses, DEFAULT_HYPOTHESES_CPU_INT8);
        // The bench's 64 sentences of 12 tokens with 4 beams: 4 batches in f32, 2 in int8.
        let lengths = [12; 64];
        assert_eq!(plan(&lengths, f32_budget, 4).len(), 4);
        assert_eq!(plan(&lengths, int8_budget, 4).len(), 2);
        // Long inputs (a summarizer's) fill a batch by tokens first, as in f32.
        let long = [600; 8];
        assert_eq!(plan(&long, int8_budget, 5), plan(&long, f32_budget, 5));
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
