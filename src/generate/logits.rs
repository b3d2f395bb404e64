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

    /// Ids this rule bans (none for a forcing rule).
    pub fn banned(&self) -> usize {
        match self {
            Self::Ban(banned) => banned.len(),
            Self::Force(_) => 0,
        }
    }

    pub fn allows(&self, id: u32) -> bool {
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

/// log_softmax(x)[id] from the row's [`log_sum_exp`], as f32 the way torch computes it:
/// (x - max) - ln(sum).
#[inline]
pub fn log_prob(logit: f32, max: f32, log_sum: f32) -> f32 {
    (logit - max) - log_sum
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
        // A forced row's values do not depend on its logits: no log-sum-exp to compute.
        let (max, log_sum) = match rule {
            RowRule::Force(_) => (0.0, 0.0),
            RowRule::Ban(_) => log_sum_exp(logits),
        };
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
            RowRule::Ban(_) => log_prob(self.logits[id as usize], self.max, self.log_sum),
        }
    }

    pub fn value(&self, id: u32) -> f32 {
        self.processed(id) - self.renorm
    }

    /// The row's width (the vocabulary).
    pub fn width(&self) -> usize {
        self.logits.len()
    }

    /// The first id at or after `from` whose `value(id) + score` may exceed `bound`, or None:
    /// an id is passed over only when its value certainly does not (the processors only lower
    /// values, and the margin covers every f32 rounding on the way). Beam search asks this of
    /// every (beam, token) candidate at every step, so the row is scanned as plain floats
    /// against one threshold, a chunk's maximum first.
    pub fn first_that_may_exceed(&self, from: u32, score: f32, bound: f32) -> Option<u32> {
        if let RowRule::Force(forced) = self.rule {
            // Every other id is -inf, which beats nothing (torch.topk's order is strict).
            let next = forced.iter().copied().filter(|&id| id >= from).min();
            return next.filter(|&id| (id as usize) < self.logits.len());
        }
        let shift = self.max + self.log_sum + self.renorm;
        let scan_safe = shift.is_finite() && score.is_finite() && bound.is_finite();
        if !scan_safe {
            // NaN or infinite values: every id is a candidate.
            return ((from as usize) < self.logits.len()).then_some(from);
        }
        // value(id) + score >= bound - margin  <=  logits[id] >= threshold, with twice the
        // margin so that computing the threshold's own rounding is covered too.
        let margin = 2e-3 * (1.0 + bound.abs() + score.abs() + shift.abs());
        let threshold = bound - margin + shift - score;
        const CHUNK: usize = 64;
        let rest = &self.logits[from as usize..];
        for (c, chunk) in rest.chunks(CHUNK).enumerate() {
            let most = chunk
                .iter()
                .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
            if most >= threshold {
                let at = chunk.iter().position(|&x| x >= threshold)?;
                return Some(from + (c * CHUNK + at) as u32);
            }
        }
        None
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
    top_k_logits_from(logits, k, f32::NEG_INFINITY)
}

/// [`top_k_logits`] among the values not below `floor` (fewer than `k` when fewer are). A
/// block of the output layer passes the best values its row already has from other blocks, so
/// that after the first blocks almost every chunk is passed over on its maximum alone.
pub fn top_k_logits_from(logits: &[f32], k: usize, floor: f32) -> Vec<(f32, u32)> {
    const BLOCK: usize = 16;
    let k = k.min(logits.len());
    let mut best: Vec<(f32, u32)> = Vec::with_capacity(k + 1);
    if k == 0 {
        return best;
    }
    for (b, block) in logits.chunks(BLOCK).enumerate() {
        let most = block_max(block);
        if most < floor || (best.len() == k && most <= best[k - 1].0) {
            continue;
        }
        for (offset, &x) in block.iter().enumerate() {
            if x.is_nan() || x < floor || (best.len() == k && x <= best[k - 1].0) {
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

/// Columns of one block of the log-sum-exp: the output layer of a beam search is reduced a
/// block at a time while the block is still in cache (`Seq2Seq::decode_step_blocks`), and a
/// whole row is summed the same way, so both give the same values bit for bit.
pub const LOG_SUM_BLOCK: usize = 1024;

/// (max, ln(sum(exp(x - max)))) of a row; log_softmax(x) = (x - max) - ln_sum. The row is cut
/// into blocks of [`LOG_SUM_BLOCK`] columns, each summed against its own maximum
/// ([`block_max_sum`]), and the blocks' sums rescaled to the row's maximum and added in order
/// ([`combine_blocks`]). (torch sums the whole row against its maximum in a vectorized order of
/// its own; neither this nor that is exact, and the values differ in the last bits.)
pub fn log_sum_exp(row: &[f32]) -> (f32, f32) {
    combine_blocks(row.chunks(LOG_SUM_BLOCK).map(block_max_sum))
}

/// The row's (max, ln(sum)) from its blocks' (max, sum) in column order.
pub fn combine_blocks(blocks: impl Iterator<Item = (f32, f32)> + Clone) -> (f32, f32) {
    let max = blocks
        .clone()
        .fold(f32::NEG_INFINITY, |m, (x, _)| if x > m { x } else { m });
    if max == f32::NEG_INFINITY {
        return (max, 0.0);
    }
    let sum: f32 = blocks
        .filter(|&(m, _)| m != f32::NEG_INFINITY)
        .map(|(m, s)| if m == max { s } else { s * fast_exp(m - max) })
        .sum();
    (max, sum.ln())
}

/// (max, sum(exp(x - max))) of one block (-inf and 0 for an empty or all -inf block). Runs
/// the AVX-512 version (`x86::block_max_sum_avx512`) or the AVX2 build of the same code where
/// the CPU has them; the results are identical (no FMA contraction, the same sum order).
pub fn block_max_sum(block: &[f32]) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F, checked just above.
        return unsafe { x86::block_max_sum_avx512(block) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { block_max_sum_avx2(block) };
    }
    block_max_sum_lanes(block)
}

/// # Safety
///
/// The CPU must support AVX2 (the code itself is safe; only its instructions need it).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn block_max_sum_avx2(block: &[f32]) -> (f32, f32) {
    block_max_sum_lanes(block)
}

/// Lanes of [`block_max_sum`]: the sum of a row runs in this many independent lanes, lane `l`
/// adding the exponentials of columns `l`, `l + LANES`, `l + 2 LANES`, ... in that order.
const LANES: usize = 8;

/// Eight independent lanes for the max and the sum let the compiler vectorize both passes.
#[inline(always)]
fn block_max_sum_lanes(row: &[f32]) -> (f32, f32) {
    let max = lanes_max(row);
    if max == f32::NEG_INFINITY {
        return (max, 0.0);
    }
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    let mut sums = [0.0f32; LANES];
    for chunk in chunks {
        add_exps(&mut sums, chunk, max);
    }
    (max, lane_total(&sums, tail, max))
}

/// The row's maximum ignoring NaN (-inf for none), taken in [`LANES`] lanes.
#[inline(always)]
fn lanes_max(row: &[f32]) -> f32 {
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    let mut maxes = [f32::NEG_INFINITY; LANES];
    for chunk in chunks {
        for (m, &x) in maxes.iter_mut().zip(chunk) {
            *m = if x > *m { x } else { *m };
        }
    }
    maxes
        .iter()
        .chain(tail)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
}

/// Adds `fast_exp(x - max)` of one chunk of [`LANES`] columns to the lanes' sums.
#[inline(always)]
fn add_exps(sums: &mut [f32; LANES], chunk: &[f32], max: f32) {
    for (s, &x) in sums.iter_mut().zip(chunk) {
        *s += fast_exp(x - max);
    }
}

/// The row's sum: the lanes in order, then the columns after the last whole chunk.
#[inline(always)]
fn lane_total(sums: &[f32; LANES], tail: &[f32], max: f32) -> f32 {
    let tail_sum: f32 = tail.iter().map(|&x| fast_exp(x - max)).sum();
    sums.iter().sum::<f32>() + tail_sum
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{add_exps, lane_total, lanes_max, LANES};

    /// [`super::block_max_sum_lanes`] with the exponentials sixteen at a time: two chunks of
    /// [`LANES`] columns side by side in one register, then added to the lanes' sums one chunk
    /// after the other, so every lane adds the same values in the same order (the same bits).
    ///
    /// # Safety
    ///
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn block_max_sum_avx512(row: &[f32]) -> (f32, f32) {
        let max = lanes_max(row);
        if max == f32::NEG_INFINITY {
            return (max, 0.0);
        }
        let pairs = row.chunks_exact(2 * LANES);
        let rest = pairs.remainder();
        let mut acc = _mm256_setzero_ps();
        for pair in pairs {
            // SAFETY: the pair holds 16 values; the CPU supports AVX-512F (the caller's).
            let e = unsafe {
                fast_exp16(_mm512_sub_ps(
                    _mm512_loadu_ps(pair.as_ptr()),
                    _mm512_set1_ps(max),
                ))
            };
            acc = _mm256_add_ps(acc, _mm512_castps512_ps256(e));
            acc = _mm256_add_ps(acc, high_half(e));
        }
        let mut sums = [0f32; LANES];
        // SAFETY: `sums` holds 8 values.
        unsafe { _mm256_storeu_ps(sums.as_mut_ptr(), acc) };
        let chunks = rest.chunks_exact(LANES);
        let tail = chunks.remainder();
        for chunk in chunks {
            add_exps(&mut sums, chunk, max);
        }
        (max, lane_total(&sums, tail, max))
    }

    /// Lanes 8..16 of `v` (AVX-512F has no f32 form of this extract; AVX-512DQ does).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn high_half(v: __m512) -> __m256 {
        _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)))
    }

    /// [`super::fast_exp`] of sixteen values: the same operations (no fused multiply-adds),
    /// so the same bits.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn fast_exp16(x: __m512) -> __m512 {
        let c = _mm512_set1_ps;
        // f32::max(x, -87.0): -87 for a NaN x, as MAXPS returns its second operand then.
        let x = _mm512_max_ps(x, c(-87.0));
        let round = c(12_582_912.0);
        let shifted = _mm512_add_ps(_mm512_mul_ps(x, c(std::f32::consts::LOG2_E)), round);
        let n = _mm512_sub_ps(shifted, round);
        let n_int = _mm512_sub_epi32(
            _mm512_castps_si512(shifted),
            _mm512_set1_epi32(12_582_912f32.to_bits() as i32),
        );
        let r = _mm512_sub_ps(
            _mm512_sub_ps(x, _mm512_mul_ps(n, c(0.693_359_4))),
            _mm512_mul_ps(n, c(-2.121_944_4e-4)),
        );
        let mut p = c(1.987_569_1e-4);
        for coefficient in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            0.5,
        ] {
            p = _mm512_add_ps(_mm512_mul_ps(p, r), c(coefficient));
        }
        let poly = _mm512_add_ps(
            _mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(p, r), r), r),
            c(1.0),
        );
        let scale = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
            n_int,
            _mm512_set1_epi32(127),
        )));
        _mm512_mul_ps(poly, scale)
    }
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

/// The order in which `torch.topk(values, k)` (largest, sorted) returns elements on the CPU,
/// equal values included: beam search ranks f32 scores that grow to thousands, where one ulp is
/// 1e-4 or more and exact ties between candidates happen every few hundred steps; transformers'
/// choice among them is whatever ATen's `topk_impl_loop` leaves in front. That is libstdc++'s
/// `std::partial_sort` when `k * 64 <= n`, else `std::nth_element` at `k - 1` followed by
/// `std::sort` of the first `k - 1`, with `x > y` (NaN first) as the order; this reproduces those
/// algorithms step by step (the torch wheels are built with GCC's libstdc++).
///
/// `value(i)` gives element `i` of `n`; `next(from, bound)` gives the first index at or after
/// `from` (or `n`) whose element may be greater than `bound`: it may skip only elements that
/// certainly are not (a cheap pre-scan; `|i, _| i` is always right). Skipped elements could not
/// have entered the heap, so the order is the same whatever the pre-scan skips.
/// Returns the indices of the `k` elements, in torch's order.
pub fn torch_topk(
    n: usize,
    k: usize,
    value: impl Fn(usize) -> f32,
    next: impl Fn(usize, f32) -> usize,
) -> Vec<usize> {
    let k = k.min(n);
    if k == 0 {
        return Vec::new();
    }
    if k * 64 <= n {
        // partial_sort: heap_select over every element, then sort_heap of the first k. Elements
        // past k matter only when they beat the heap's top, so the others are never evaluated.
        let mut heap: Vec<(f32, usize)> = (0..k).map(|i| (value(i), i)).collect();
        make_heap(&mut heap);
        let mut i = next(k, heap[0].0);
        while i < n {
            let candidate = (value(i), i);
            if before(&candidate, &heap[0]) {
                // __pop_heap(first, middle, i): the top leaves, the candidate sifts in.
                adjust_heap(&mut heap, 0, k, candidate);
            }
            i = next(i + 1, heap[0].0);
        }
        sort_heap(&mut heap);
        return heap.into_iter().map(|(_, i)| i).collect();
    }
    let mut queue: Vec<(f32, usize)> = (0..n).map(|i| (value(i), i)).collect();
    nth_element(&mut queue, k - 1);
    sort(&mut queue[..k - 1]);
    queue.truncate(k);
    queue.into_iter().map(|(_, i)| i).collect()
}

/// ATen's comparator for `largest`: NaN before numbers, then the larger first.
fn before(x: &(f32, usize), y: &(f32, usize)) -> bool {
    (x.0.is_nan() && !y.0.is_nan()) || x.0 > y.0
}

/// libstdc++'s `__adjust_heap` followed by its `__push_heap`.
fn adjust_heap(v: &mut [(f32, usize)], mut hole: usize, len: usize, value: (f32, usize)) {
    let top = hole;
    let mut second = hole;
    while len >= 2 && second < (len - 1) / 2 {
        second = 2 * (second + 1);
        if before(&v[second], &v[second - 1]) {
            second -= 1;
        }
        v[hole] = v[second];
        hole = second;
    }
    if len & 1 == 0 && len >= 2 && second == (len - 2) / 2 {
        second = 2 * (second + 1);
        v[hole] = v[second - 1];
        hole = second - 1;
    }
    // __push_heap
    while hole > top {
        let parent = (hole - 1) / 2;
        if !before(&v[parent], &value) {
            break;
        }
        v[hole] = v[parent];
        hole = parent;
    }
    v[hole] = value;
}

fn make_heap(v: &mut [(f32, usize)]) {
    let len = v.len();
    if len < 2 {
        return;
    }
    let mut parent = (len - 2) / 2;
    loop {
        adjust_heap(v, parent, len, v[parent]);
        if parent == 0 {
            return;
        }
        parent -= 1;
    }
}

/// `__pop_heap(first, last, result)` with `result` the last element of `v`.
fn pop_heap(v: &mut [(f32, usize)]) {
    let last = v.len() - 1;
    let value = v[last];
    v[last] = v[0];
    adjust_heap(v, 0, last, value);
}

fn sort_heap(v: &mut [(f32, usize)]) {
    let mut len = v.len();
    while len > 1 {
        pop_heap(&mut v[..len]);
        len -= 1;
    }
}

/// `__heap_select(first, middle, last)` then `__sort_heap(first, middle)`.
fn partial_sort(v: &mut [(f32, usize)], middle: usize) {
    make_heap(&mut v[..middle]);
    for i in middle..v.len() {
        if before(&v[i], &v[0]) {
            let value = v[i];
            v[i] = v[0];
            adjust_heap(v, 0, middle, value);
        }
    }
    sort_heap(&mut v[..middle]);
}

/// floor(log2(n)) for n > 0 (`std::__lg`).
fn lg(n: usize) -> usize {
    (usize::BITS - 1 - n.leading_zeros()) as usize
}

/// `__move_median_to_first(result, a, b, c)`.
fn move_median_to_first(v: &mut [(f32, usize)], result: usize, a: usize, b: usize, c: usize) {
    let pick = if before(&v[a], &v[b]) {
        if before(&v[b], &v[c]) {
            b
        } else if before(&v[a], &v[c]) {
            c
        } else {
            a
        }
    } else if before(&v[a], &v[c]) {
        a
    } else if before(&v[b], &v[c]) {
        c
    } else {
        b
    };
    v.swap(result, pick);
}

/// `__unguarded_partition_pivot(first, last)` on all of `v`; returns the cut.
fn partition_pivot(v: &mut [(f32, usize)]) -> usize {
    let len = v.len();
    let mid = len / 2;
    move_median_to_first(v, 0, 1, mid, len - 1);
    let pivot = v[0];
    let (mut first, mut last) = (1, len);
    loop {
        while before(&v[first], &pivot) {
            first += 1;
        }
        last -= 1;
        while before(&pivot, &v[last]) {
            last -= 1;
        }
        if first >= last {
            return first;
        }
        v.swap(first, last);
        first += 1;
    }
}

fn insertion_sort(v: &mut [(f32, usize)]) {
    for i in 1..v.len() {
        let value = v[i];
        if before(&value, &v[0]) {
            v.copy_within(0..i, 1);
            v[0] = value;
        } else {
            unguarded_linear_insert(v, i);
        }
    }
}

fn unguarded_linear_insert(v: &mut [(f32, usize)], mut last: usize) {
    let value = v[last];
    while before(&value, &v[last - 1]) {
        v[last] = v[last - 1];
        last -= 1;
    }
    v[last] = value;
}

/// `std::nth_element(first, first + nth, last)` (`__introselect`).
fn nth_element(v: &mut [(f32, usize)], nth: usize) {
    if v.is_empty() || nth >= v.len() {
        return;
    }
    let mut depth = lg(v.len()) * 2;
    let (mut first, mut last) = (0, v.len());
    while last - first > 3 {
        if depth == 0 {
            // __heap_select(first, nth + 1, last), then the nth element to its place.
            let part = &mut v[first..last];
            let middle = nth + 1 - first;
            make_heap(&mut part[..middle]);
            for i in middle..part.len() {
                if before(&part[i], &part[0]) {
                    let value = part[i];
                    part[i] = part[0];
                    adjust_heap(part, 0, middle, value);
                }
            }
            v.swap(first, nth);
            return;
        }
        depth -= 1;
        let cut = first + partition_pivot(&mut v[first..last]);
        if cut <= nth {
            first = cut;
        } else {
            last = cut;
        }
    }
    insertion_sort(&mut v[first..last]);
}

/// `std::sort` (`__introsort_loop` then `__final_insertion_sort`).
fn sort(v: &mut [(f32, usize)]) {
    const THRESHOLD: usize = 16;
    if v.is_empty() {
        return;
    }
    introsort_loop(v, lg(v.len()) * 2);
    if v.len() > THRESHOLD {
        insertion_sort(&mut v[..THRESHOLD]);
        for i in THRESHOLD..v.len() {
            unguarded_linear_insert(v, i);
        }
    } else {
        insertion_sort(v);
    }

    fn introsort_loop(v: &mut [(f32, usize)], mut depth: usize) {
        let mut last = v.len();
        while last > THRESHOLD {
            if depth == 0 {
                partial_sort(&mut v[..last], last);
                return;
            }
            depth -= 1;
            let cut = partition_pivot(&mut v[..last]);
            introsort_loop(&mut v[cut..last], depth);
            last = cut;
        }
    }
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
        let (m, sum) = block_max_sum_lanes(&row);
        assert_eq!((m, sum.ln()), (max, log_sum));
    }

    /// Every build of a block's (max, sum) gives the portable code's bits, on rows of every
    /// length up to two pairs of chunks past a block, with NaN, infinities and large gaps.
    #[test]
    fn block_max_sum_is_the_same_on_every_kernel() {
        for len in (0..70).chain([LOG_SUM_BLOCK - 1, LOG_SUM_BLOCK, LOG_SUM_BLOCK + 33]) {
            let mut row: Vec<f32> = (0..len)
                .map(|i| ((i * 7919 % 1013) as f32 * 0.37).sin() * 30.0)
                .collect();
            if len > 20 {
                row[3] = f32::NAN;
                row[11] = f32::NEG_INFINITY;
                row[17] = 95.0;
            }
            let bits = |(m, s): (f32, f32)| (m.to_bits(), s.to_bits());
            let portable = bits(block_max_sum_lanes(&row));
            assert_eq!(bits(block_max_sum(&row)), portable, "length {len}");
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU supports AVX-512F, checked just above.
                let wide = unsafe { x86::block_max_sum_avx512(&row) };
                assert_eq!(bits(wide), portable, "length {len}");
            }
        }
    }

    #[test]
    fn a_long_row_sums_by_blocks_close_to_a_plain_sum() {
        // Three blocks and a tail, the largest value in the middle block, one block all -inf.
        let mut row: Vec<f32> = (0..3 * LOG_SUM_BLOCK + 13)
            .map(|i| (i as f32 * 0.011).sin() * 9.0)
            .collect();
        row[LOG_SUM_BLOCK + 7] = 20.0;
        row[..LOG_SUM_BLOCK]
            .iter_mut()
            .for_each(|x| *x = f32::NEG_INFINITY);
        let (max, log_sum) = log_sum_exp(&row);
        let plain: f64 = row
            .iter()
            .map(|&x| (x as f64 - 20.0).exp())
            .sum::<f64>()
            .ln();
        assert_eq!(max, 20.0);
        assert!(
            (log_sum as f64 - plain).abs() < 1e-5,
            "{log_sum} vs {plain}"
        );
        let parts: Vec<(f32, f32)> = row.chunks(LOG_SUM_BLOCK).map(block_max_sum).collect();
        assert_eq!(combine_blocks(parts.into_iter()), (max, log_sum));
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

    /// `torch.topk(v, k).indices` printed by torch 2.15 on the CPU for
    /// `v[i] = (i * 37 + 11) % m`: rows full of ties, through every branch (partial_sort,
    /// nth_element with the final insertion sort, std::sort beyond 16 elements).
    #[test]
    fn topk_keeps_ties_in_torchs_order() {
        let cases: [(usize, usize, usize, &[usize]); 9] = [
            (10, 5, 4, &[4, 8, 0, 3, 7]),
            (15, 5, 3, &[3, 6, 0, 9, 12]),
            (
                40,
                20,
                5,
                &[
                    39, 14, 19, 9, 24, 29, 4, 34, 31, 26, 21, 36, 16, 1, 6, 11, 8, 33, 23, 3,
                ],
            ),
            (700, 8, 9, &[15, 24, 60, 51, 33, 69, 42, 6]),
            (
                3755,
                10,
                97,
                &[39, 330, 621, 136, 233, 718, 815, 912, 524, 427],
            ),
            (3755, 10, 3, &[12, 9, 0, 3, 15, 21, 24, 27, 18, 6]),
            (200, 3, 2, &[4, 0, 2]),
            (
                1000,
                15,
                7,
                &[8, 1, 85, 29, 15, 43, 78, 92, 36, 64, 99, 50, 71, 57, 22],
            ),
            (
                100,
                40,
                6,
                &[
                    12, 24, 30, 36, 84, 90, 18, 42, 48, 0, 54, 78, 96, 6, 60, 66, 72, 5, 83, 23,
                    17, 11, 29, 95, 89, 35, 71, 41, 47, 53, 77, 59, 65, 52, 10, 16, 82, 46, 58, 4,
                ],
            ),
        ];
        for (n, k, m, want) in cases {
            let value = |i: usize| ((i * 37 + 11) % m) as f32;
            assert_eq!(
                torch_topk(n, k, value, |i, _| i),
                want,
                "n {n}, k {k}, m {m}"
            );
            // The pre-test may skip only what cannot enter: a tight one gives the same order.
            let tight =
                |from: usize, bound: f32| (from..n).find(|&i| value(i) > bound).unwrap_or(n);
            assert_eq!(torch_topk(n, k, value, tight), want, "n {n}, k {k}, m {m}");
        }
    }
}
