//! transformers' logits processors for one row at one step, applied without copying the row.
//!
//! transformers runs, in this order: no_repeat_ngram, bad_words, min_length / min_new_tokens (ban
//! the end token), forced_bos (first step), forced_eos (last step), and, last, renormalize
//! (log-softmax again). Every one of them either sets some scores to -inf or replaces the whole
//! row by "0 for the forced tokens, -inf elsewhere". So a row's processing is fully described by
//! [`RowRule`]: a set of banned ids, or a set of forced ids. Beam search applies the rule after
//! log-softmax (as transformers does), greedy search to the raw logits.

use super::config::Settings;

/// What the processors do to one row.
#[derive(Debug, Clone, PartialEq)]
pub enum RowRule {
    /// These ids get -inf; the others keep their score.
    Ban(Vec<u32>),
    /// Only these ids survive, each with score 0 (forced_bos / forced_eos).
    Force(Vec<u32>),
}

impl RowRule {
    /// The rule for a row whose decoder input so far is `history` (decoder start token first,
    /// as transformers' `input_ids`).
    pub fn for_history(settings: &Settings, history: &[u32]) -> Self {
        let generated = history.len() - 1;
        if generated + 1 == settings.max_new_tokens && !settings.forced_eos_token_id.is_empty() {
            return Self::Force(settings.forced_eos_token_id.clone());
        }
        if let (0, Some(bos)) = (generated, settings.forced_bos_token_id) {
            return Self::Force(vec![bos]);
        }
        let mut banned = Vec::new();
        banned_ngram_tokens(history, settings.no_repeat_ngram_size, &mut banned);
        banned_bad_words(history, &settings.bad_words_ids, &mut banned);
        if generated < settings.min_new_tokens {
            banned.extend_from_slice(&settings.eos_token_ids);
        }
        banned.sort_unstable();
        banned.dedup();
        Self::Ban(banned)
    }

    fn allows(&self, id: u32) -> bool {
        match self {
            Self::Ban(banned) => banned.binary_search(&id).is_err(),
            Self::Force(forced) => forced.contains(&id),
        }
    }
}

/// NoRepeatNGramLogitsProcessor: every n-gram of the history (start token included) whose first
/// n-1 tokens equal the last n-1 tokens bans its last token.
fn banned_ngram_tokens(history: &[u32], n: usize, banned: &mut Vec<u32>) {
    if n == 0 || history.len() < n {
        return;
    }
    let prefix = &history[history.len() + 1 - n..];
    banned.extend(
        history
            .windows(n)
            .filter(|w| w[..n - 1] == *prefix)
            .map(|w| w[n - 1]),
    );
}

/// NoBadWordsLogitsProcessor: a one-token entry is always banned; a longer one bans its last token
/// when the history ends with the others.
fn banned_bad_words(history: &[u32], bad_words: &[Vec<u32>], banned: &mut Vec<u32>) {
    for seq in bad_words {
        if let Some((last, prefix)) = seq.split_last() {
            if history.ends_with(prefix) {
                banned.push(*last);
            }
        }
    }
}

/// One row's scores after log-softmax and the processors: `value(id)` is what transformers'
/// beam search adds to the beam score.
pub struct LogProbs<'a> {
    logits: &'a [f32],
    rule: &'a RowRule,
    /// Subtracted from every allowed logit: max + ln(sum(exp(x - max))), split as torch does.
    max: f32,
    log_sum: f32,
    /// renormalize_logits: the second log-softmax's shift.
    renorm: f32,
}

impl<'a> LogProbs<'a> {
    pub fn new(logits: &'a [f32], rule: &'a RowRule, renormalize: bool) -> Self {
        let (max, log_sum) = log_sum_exp(logits);
        let mut row = Self {
            logits,
            rule,
            max,
            log_sum,
            renorm: 0.0,
        };
        if renormalize {
            row.renorm = row.renormalization();
        }
        row
    }

    /// log_softmax(logits)[id] with the rule applied (before renormalization), as f32 the way
    /// torch computes it: (x - max) - ln(sum).
    fn processed(&self, id: u32) -> f32 {
        match self.rule {
            RowRule::Force(forced) if forced.contains(&id) => 0.0,
            RowRule::Force(_) => f32::NEG_INFINITY,
            RowRule::Ban(_) if !self.rule.allows(id) => f32::NEG_INFINITY,
            RowRule::Ban(_) => (self.logits[id as usize] - self.max) - self.log_sum,
        }
    }

    pub fn value(&self, id: u32) -> f32 {
        self.processed(id) - self.renorm
    }

    /// The shift of a second log-softmax over the processed row.
    fn renormalization(&self) -> f32 {
        let processed: Vec<f32> = (0..self.logits.len() as u32)
            .map(|id| self.processed(id))
            .collect();
        let (max, log_sum) = log_sum_exp(&processed);
        if max == f32::NEG_INFINITY {
            return 0.0;
        }
        max + log_sum
    }

    /// The `k` best (value, id), best first; equal values keep the lower id first.
    pub fn top_k(&self, k: usize) -> Vec<(f32, u32)> {
        match self.rule {
            RowRule::Force(forced) => {
                let mut out: Vec<(f32, u32)> =
                    forced.iter().map(|&id| (self.value(id), id)).collect();
                out.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                let fill = (0..self.logits.len() as u32).filter(|id| !forced.contains(id));
                out.extend(fill.map(|id| (f32::NEG_INFINITY, id)));
                out.truncate(k);
                out
            }
            RowRule::Ban(banned) => {
                let best = top_k_logits(self.logits, k + banned.len());
                let allowed = best.into_iter().filter(|&(_, id)| self.rule.allows(id));
                let mut out: Vec<(f32, u32)> =
                    allowed.map(|(_, id)| (self.value(id), id)).collect();
                out.truncate(k);
                let fill = banned.iter().map(|&id| (f32::NEG_INFINITY, id));
                out.extend(fill.take(k.saturating_sub(out.len())));
                out
            }
        }
    }
}

/// Greedy choice over raw logits with the rule applied: argmax, the lowest id on ties (as
/// torch.argmax). Renormalization cannot change the argmax, so it is not applied.
pub fn greedy_choice(logits: &[f32], rule: &RowRule) -> u32 {
    match rule {
        RowRule::Force(forced) => forced.iter().copied().min().unwrap_or(0),
        RowRule::Ban(banned) => top_k_logits(logits, banned.len() + 1)
            .into_iter()
            .map(|(_, id)| id)
            .find(|&id| rule.allows(id))
            .unwrap_or(0),
    }
}

/// The `k` largest logits (value, id), best first, the lower id first among equal values.
///
/// Once `k` values are held, a block of the row is looked at element by element only when its
/// maximum beats the k-th best: after the first few blocks almost none does, and the block
/// maxima vectorize.
pub fn top_k_logits(logits: &[f32], k: usize) -> Vec<(f32, u32)> {
    const BLOCK: usize = 16;
    let k = k.min(logits.len());
    let mut best: Vec<(f32, u32)> = Vec::with_capacity(k + 1);
    if k == 0 {
        return best;
    }
    for (b, block) in logits.chunks(BLOCK).enumerate() {
        if best.len() == k && block_max(block) <= best[k - 1].0 {
            continue;
        }
        for (offset, &x) in block.iter().enumerate() {
            if x.is_nan() || (best.len() == k && x <= best[k - 1].0) {
                continue;
            }
            let at = best.partition_point(|&(v, _)| v >= x);
            best.insert(at, (x, (b * BLOCK + offset) as u32));
            best.truncate(k);
        }
    }
    best
}

/// The largest non-NaN value of a block (-inf for none), in lanes the compiler vectorizes.
fn block_max(block: &[f32]) -> f32 {
    block
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m })
}

/// (max, ln(sum(exp(x - max)))) of a row; log_softmax(x) = (x - max) - ln_sum. Runs the AVX2
/// build of the same code where the CPU has it (the results are identical: no FMA contraction).
pub fn log_sum_exp(row: &[f32]) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { log_sum_exp_avx2(row) };
    }
    log_sum_exp_lanes(row)
}

/// # Safety
///
/// The CPU must support AVX2 (the code itself is safe; only its instructions need it).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn log_sum_exp_avx2(row: &[f32]) -> (f32, f32) {
    log_sum_exp_lanes(row)
}

/// Eight independent lanes for the max and the sum let the compiler vectorize both passes.
#[inline(always)]
fn log_sum_exp_lanes(row: &[f32]) -> (f32, f32) {
    const LANES: usize = 8;
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    let mut maxes = [f32::NEG_INFINITY; LANES];
    for chunk in chunks.clone() {
        for (m, &x) in maxes.iter_mut().zip(chunk) {
            *m = if x > *m { x } else { *m };
        }
    }
    let max = maxes
        .iter()
        .chain(tail)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return (max, 0.0);
    }
    let mut sums = [0.0f32; LANES];
    for chunk in chunks {
        for (s, &x) in sums.iter_mut().zip(chunk) {
            *s += fast_exp(x - max);
        }
    }
    let tail_sum: f32 = tail.iter().map(|&x| fast_exp(x - max)).sum();
    let sum = sums.iter().sum::<f32>() + tail_sum;
    (max, sum.ln())
}

/// exp(x) for x <= 0 to about one ulp (Cephes' expf polynomial), written without branches or
/// library calls so that the loop above vectorizes. log-softmax over a 62k vocabulary is
/// otherwise a fifth of a decoding step.
#[inline(always)]
fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let x = x.max(-87.0);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    // n as an integer, read from the mantissa of `shifted` (a float-to-int cast would not
    // vectorize: Rust's saturating cast checks every lane).
    let n_int = shifted.to_bits() as i32 - ROUND.to_bits() as i32;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let poly = p * r * r + r + 1.0;
    let scale = f32::from_bits(((n_int + 127) as u32) << 23);
    poly * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The engine tests' settings, with this module's token ids (end 1, start and pad 0).
    fn settings() -> Settings {
        Settings {
            eos_token_ids: vec![1],
            pad_token_id: 0,
            decoder_start_token_id: 0,
            ..crate::generate::search::tests::settings(1, 10)
        }
    }

    #[test]
    fn fast_exp_matches_std() {
        for i in 0..2000 {
            let x = -(i as f32) * 0.043;
            let (a, b) = (fast_exp(x), x.exp());
            assert!((a - b).abs() <= b * 2e-7 + 1e-38, "{x}: {a} vs {b}");
        }
    }

    #[test]
    fn log_sum_exp_handles_tails_and_masked_rows() {
        let row: Vec<f32> = (0..21).map(|i| (i as f32 * 0.37).sin() * 5.0).collect();
        let (max, log_sum) = log_sum_exp(&row);
        let plain_max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let plain: f32 = row.iter().map(|x| (x - plain_max).exp()).sum::<f32>().ln();
        assert_eq!(max, plain_max);
        assert!((log_sum - plain).abs() < 1e-6);
        assert_eq!(
            log_sum_exp(&[f32::NEG_INFINITY; 9]),
            (f32::NEG_INFINITY, 0.0)
        );
        assert_eq!(log_sum_exp_lanes(&row), (max, log_sum));
    }

    #[test]
    fn log_probs_match_a_plain_log_softmax() {
        let logits = [1.0f32, 3.0, -2.0, 0.5];
        let rule = RowRule::Ban(vec![]);
        let row = LogProbs::new(&logits, &rule, false);
        let z: f32 = logits.iter().map(|x| x.exp()).sum::<f32>().ln();
        for (id, x) in logits.iter().enumerate() {
            assert!((row.value(id as u32) - (x - z)).abs() < 1e-6);
        }
    }

    #[test]
    fn ngrams_include_the_start_token() {
        let mut s = settings();
        s.no_repeat_ngram_size = 2;
        // history: start 0, then 5 7 5 -> the bigram (5, 7) bans 7; (0, 5) is not a match.
        assert_eq!(
            RowRule::for_history(&s, &[0, 5, 7, 5]),
            RowRule::Ban(vec![7])
        );
        // After 0 the bigram (0, 5) bans 5 when the last token is 0 again.
        assert_eq!(RowRule::for_history(&s, &[0, 5, 0]), RowRule::Ban(vec![5]));
        s.no_repeat_ngram_size = 3;
        assert_eq!(RowRule::for_history(&s, &[0, 4]), RowRule::Ban(vec![]));
    }

    #[test]
    fn bad_words_min_length_and_forcing() {
        let mut s = settings();
        s.bad_words_ids = vec![vec![9], vec![4, 6]];
        s.min_new_tokens = 2;
        assert_eq!(
            RowRule::for_history(&s, &[0, 4]),
            RowRule::Ban(vec![1, 6, 9])
        );
        assert_eq!(RowRule::for_history(&s, &[0, 4, 3]), RowRule::Ban(vec![9]));
        s.forced_bos_token_id = Some(8);
        s.forced_eos_token_id = vec![1];
        assert_eq!(RowRule::for_history(&s, &[0]), RowRule::Force(vec![8]));
        let last = [0u32; 10]; // 9 generated, the 10th is the last allowed
        assert_eq!(RowRule::for_history(&s, &last), RowRule::Force(vec![1]));
    }

    #[test]
    fn top_k_skips_banned_ids_and_keeps_order() {
        let logits = [0.1f32, 0.9, 0.5, 0.9, -1.0];
        assert_eq!(top_k_logits(&logits, 3), vec![(0.9, 1), (0.9, 3), (0.5, 2)]);
        let rule = RowRule::Ban(vec![1]);
        let row = LogProbs::new(&logits, &rule, false);
        let ids: Vec<u32> = row.top_k(3).into_iter().map(|(_, id)| id).collect();
        assert_eq!(ids, vec![3, 2, 0]);
        assert_eq!(greedy_choice(&logits, &rule), 3);
        assert_eq!(greedy_choice(&logits, &RowRule::Ban(vec![])), 1);
    }

    #[test]
    fn forced_rows_have_one_finite_candidate() {
        let logits = [0.1f32, 0.9, 0.5];
        let rule = RowRule::Force(vec![2]);
        let row = LogProbs::new(&logits, &rule, true);
        let top = row.top_k(2);
        assert_eq!(top[0], (0.0, 2));
        assert_eq!(top[1].0, f32::NEG_INFINITY);
    }

    #[test]
    fn renormalization_makes_allowed_probabilities_sum_to_one() {
        let logits = [0.1f32, 0.9, 0.5, 2.0];
        let rule = RowRule::Ban(vec![3]);
        let row = LogProbs::new(&logits, &rule, true);
        let total: f32 = (0..4).map(|id| row.value(id).exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
    }
}
