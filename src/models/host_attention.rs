//! Decoder-step attention on the CPU in f32, computed on plain slices.
//!
//! A decoder step has one query per row. Through candle, each attention block of a step is about
//! ten tensor operations (head splits, cache append, two batched matmuls of one-row products,
//! softmax, head merge), each a pass over memory with its own thread dispatch: measured on a
//! beam-4 decode of opus-mt (144 rows), everything in a step but the linear layers took about a
//! quarter of the step. Here one pass per row attends, rows in parallel; the self-attention cache
//! ([`HostKv`]) keeps each position as written, and beam reordering copies nothing.
//!
//! Scores are `q · k + bias` (queries come pre-scaled from their projection), softmax as
//! transformers computes it (max subtracted, exponentials summed in f32), then the weighted sum
//! of the values.

use candle_core::{Storage, Tensor};

/// Runs `f` on the values of contiguous f32 CPU tensors; an error for any other tensor.
pub fn with_host_f32<T, const N: usize>(
    tensors: [&Tensor; N],
    f: impl FnOnce([&[f32]; N]) -> T,
) -> candle_core::Result<T> {
    let held: Vec<_> = tensors.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices: [&[f32]; N] = [&[]; N];
    for (slot, (storage, layout)) in slices.iter_mut().zip(&held) {
        let Storage::Cpu(cpu) = &**storage else {
            candle_core::bail!("host attention needs CPU tensors");
        };
        if !layout.is_contiguous() {
            candle_core::bail!("host attention needs contiguous tensors");
        }
        let start = layout.start_offset();
        *slot = &cpu.as_slice::<f32>()?[start..start + layout.shape().elem_count()];
    }
    Ok(f(slices))
}

/// The self-attention keys and values of every position so far, stored position by position
/// as written, with each position's parent rows.
///
/// Beam search reorders the rows at every step (a beam continues another beam's history).
/// Instead of copying every row's keys and values into the new order, a reorder is recorded as
/// the rows' parents, and attention follows each row's chain of parents back through the
/// positions. A step then writes only its own position, and nothing is ever copied.
pub struct HostKv {
    /// keys[t], values[t]: (rows at position t, heads x head_dim).
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    /// parents[t][r]: the row of position t that row r of position t + 1 continues.
    parents: Vec<Vec<u32>>,
    /// For each current row, the row of the last position it continues (None: the same row).
    pending: Option<Vec<u32>>,
    rows: usize,
    heads: usize,
    dim: usize,
}

impl HostKv {
    pub fn new(rows: usize, heads: usize, dim: usize) -> Self {
        Self {
            keys: Vec::new(),
            values: Vec::new(),
            parents: Vec::new(),
            pending: None,
            rows,
            heads,
            dim,
        }
    }

    fn inner(&self) -> usize {
        self.heads * self.dim
    }

    /// Keeps `rows` (indices into the current rows, may repeat), in that order.
    pub fn select_rows(&mut self, rows: &[u32]) -> candle_core::Result<()> {
        if let Some(&bad) = rows.iter().find(|&&r| r as usize >= self.rows) {
            candle_core::bail!("select_rows: row {bad} of {} rows", self.rows);
        }
        if !self.keys.is_empty() {
            self.pending = Some(match &self.pending {
                Some(earlier) => rows.iter().map(|&r| earlier[r as usize]).collect(),
                None => rows.to_vec(),
            });
        }
        self.rows = rows.len();
        Ok(())
    }

    /// Appends one position from `qkv` (rows, 3 x inner: queries, keys, values) and attends it
    /// with every position so far; returns (rows, inner). `bias`: additive scores laid out
    /// (bias rows, heads, positions so far), bias rows 1 (shared) or one per row.
    pub fn step(&mut self, qkv: &[f32], bias: Option<&[f32]>) -> candle_core::Result<Vec<f32>> {
        let (inner, rows) = (self.inner(), self.rows);
        if qkv.len() != rows * 3 * inner {
            candle_core::bail!("attention step: {} values for {rows} rows", qkv.len());
        }
        let len = self.keys.len() + 1;
        let per_row_bias = match bias {
            None => None,
            Some(b) if b.len() == self.heads * len => Some((b, 0)),
            Some(b) if b.len() == rows * self.heads * len => Some((b, self.heads * len)),
            Some(b) => candle_core::bail!("attention step: a bias of {} values", b.len()),
        };
        self.compact();
        if len > 1 {
            let parents = self.pending.take();
            self.parents
                .push(parents.unwrap_or_else(|| (0..rows as u32).collect()));
        }
        // Row by row as slices: a `flat_map` collect moved one value at a time, about 2% of a
        // T5 summary on the step's own thread.
        let part = |p: usize| -> Vec<f32> {
            let mut part = Vec::with_capacity(rows * inner);
            for row in qkv.chunks(3 * inner.max(1)) {
                part.extend_from_slice(&row[p * inner..(p + 1) * inner]);
            }
            part
        };
        self.keys.push(part(1));
        self.values.push(part(2));
        let mut out = vec![0f32; rows * inner];
        let (heads, dim) = (self.heads, self.dim);
        crate::parallel::for_each_chunk_mut(&mut out, inner.max(1), |r, out_row| {
            let qkv_row = &qkv[r * 3 * inner..][..3 * inner];
            let chain = self.ancestors(r);
            let mut scores = Vec::with_capacity(len);
            for h in 0..heads {
                let head = h * dim..(h + 1) * dim;
                let at = |t: usize| chain[t] as usize * inner + h * dim;
                let bias = per_row_bias.map(|(b, stride)| &b[r * stride + h * len..][..len]);
                let query = Query {
                    q: &qkv_row[head.clone()],
                    n: len,
                    key: |t: usize| &self.keys[t][at(t)..at(t) + dim],
                    value: |t: usize| &self.values[t][at(t)..at(t) + dim],
                    bias,
                };
                query.attend(&mut scores, &mut out_row[head]);
            }
        });
        Ok(out)
    }

    /// Drops the keys and values that no current row attends any more, at each position where
    /// they are half its rows or more.
    ///
    /// A beam that no candidate continues leaves its keys and values behind, and so does every
    /// ancestor it alone continued; beams soon share their older positions (a beam search of 4
    /// beams keeps 4 rows at each position, of which mostly one or two lead to the rows that
    /// run), and inputs that finished leave all of theirs. Kept, they are most of the cache
    /// by the end, and the cache is most of a beam search's memory above the weights. Halving
    /// at the least bounds the copying: each position is compacted a few times at most, and
    /// the rows kept are copied as they are, so every attended value is the same.
    fn compact(&mut self) {
        let inner = self.inner();
        let positions = self.keys.len();
        if positions == 0 || inner == 0 {
            return;
        }
        let mut live: Vec<Vec<bool>> = (self.keys.iter())
            .map(|k| vec![false; k.len() / inner])
            .collect();
        match &self.pending {
            Some(rows) => rows
                .iter()
                .for_each(|&r| live[positions - 1][r as usize] = true),
            None => live[positions - 1].fill(true),
        }
        for t in (1..positions).rev() {
            let (older, newer) = live.split_at_mut(t);
            for (r, _) in newer[0].iter().enumerate().filter(|(_, &l)| l) {
                older[t - 1][self.parents[t - 1][r] as usize] = true;
            }
        }
        // For each position worth compacting, the new index of each row kept.
        let maps: Vec<Option<Vec<u32>>> = live.iter().map(|l| compaction(l)).collect();
        if maps.iter().all(Option::is_none) {
            return;
        }
        for (t, map) in maps.iter().enumerate() {
            if map.is_some() {
                self.keys[t] = kept_rows(&self.keys[t], &live[t], inner);
                self.values[t] = kept_rows(&self.values[t], &live[t], inner);
            }
        }
        // parents[t] maps the rows of position t + 1 to rows of t: keep the entries of the
        // rows t + 1 keeps, pointing to the new rows of t. (A dead row of a position left as
        // it is may point to a dropped row, `u32::MAX`: no current row's chain passes
        // through it.)
        for (t, parents) in self.parents.iter_mut().enumerate() {
            let (map, newer) = (&maps[t], (&maps[t + 1], &live[t + 1]));
            let moved = |p: u32| match map {
                Some(m) => m.get(p as usize).copied().unwrap_or(u32::MAX),
                None => p,
            };
            let kept = (parents.iter().enumerate())
                .filter(|&(r, _)| newer.0.is_none() || newer.1[r])
                .map(|(_, &p)| moved(p));
            *parents = kept.collect();
        }
        if let (Some(rows), Some(map)) = (&mut self.pending, &maps[positions - 1]) {
            rows.iter_mut().for_each(|r| *r = map[*r as usize]);
        }
    }

    /// The row that current row `r` occupies at each position, oldest first.
    fn ancestors(&self, r: usize) -> Vec<u32> {
        let mut chain = vec![0u32; self.keys.len()];
        let mut row = r as u32;
        for t in (0..chain.len()).rev() {
            chain[t] = row;
            if t > 0 {
                row = self.parents[t - 1][row as usize];
            }
        }
        chain
    }
}

/// For a position whose `live` rows are half of its rows or fewer, the new index of each of
/// them (`u32::MAX` for the others); `None` when the position is better left as it is.
fn compaction(live: &[bool]) -> Option<Vec<u32>> {
    let kept = live.iter().filter(|&&l| l).count();
    if kept == live.len() || 2 * kept > live.len() {
        return None;
    }
    let mut next = 0;
    Some(
        (live.iter())
            .map(|&l| match l {
                true => {
                    next += 1;
                    next - 1
                }
                false => u32::MAX,
            })
            .collect(),
    )
}

/// The rows of `values` (rows of `inner` values) that `live` marks, in order.
fn kept_rows(values: &[f32], live: &[bool], inner: usize) -> Vec<f32> {
    let kept = live.iter().filter(|&&l| l).count();
    let mut out = Vec::with_capacity(kept * inner);
    for (row, _) in values.chunks(inner).zip(live).filter(|(_, &l)| l) {
        out.extend_from_slice(row);
    }
    out
}

/// The memory side of cross-attention: keys and values (memory rows, heads, positions, dim),
/// and the additive padding bias (memory rows, positions).
pub struct Memory<'a> {
    pub keys: &'a [f32],
    pub values: &'a [f32],
    pub bias: &'a [f32],
    pub heads: usize,
    pub dim: usize,
}

/// One query per row over the encoder memory; memory row `m` serves the `group` consecutive
/// rows `m * group..(m + 1) * group`. `q`: (rows, inner); returns (rows, inner).
///
/// The work is one task per memory row and head, so that two threads stay busy with a handful
/// of inputs (one task per input left a thread idle a third of the time with three), and each
/// task runs the group's queries (the beams of one input) together: every key and value is
/// read once for all of them. Each query's arithmetic is the same as alone (see [`Block`]).
pub fn cross(q: &[f32], memory: &Memory, group: usize) -> candle_core::Result<Vec<f32>> {
    let (heads, dim) = (memory.heads, memory.dim);
    let inner = heads * dim;
    let memory_rows = q.len() / (inner * group).max(1);
    let positions = memory.bias.len() / memory_rows.max(1);
    let sizes_agree = q.len() == memory_rows * group * inner
        && memory.bias.len() == memory_rows * positions
        && memory.keys.len() == memory_rows * heads * positions * dim
        && memory.values.len() == memory.keys.len();
    if !sizes_agree {
        candle_core::bail!("cross-attention step: the query, memory and bias sizes disagree");
    }
    let mut out = vec![0f32; q.len()];
    if group * inner == 0 {
        return Ok(out);
    }
    let block = positions * dim;
    let attended: Vec<Vec<f32>> = crate::parallel::map(memory_rows * heads, |task| {
        let (m, h) = (task / heads, task % heads);
        let at = (m * heads + h) * block;
        let queries: Vec<&[f32]> = (0..group)
            .map(|b| &q[(m * group + b) * inner + h * dim..][..dim])
            .collect();
        let block = Block {
            queries: &queries,
            keys: &memory.keys[at..at + block],
            values: &memory.values[at..at + block],
            bias: &memory.bias[m * positions..][..positions],
            dim,
        };
        let mut attended = vec![0f32; group * dim];
        block.attend(&mut attended);
        attended
    });
    for (task, attended) in attended.iter().enumerate() {
        let (m, h) = (task / heads, task % heads);
        for (b, part) in attended.chunks(dim).enumerate() {
            out[(m * group + b) * inner + h * dim..][..dim].copy_from_slice(part);
        }
    }
    Ok(out)
}

/// Several queries over the same keys and values (one head of one input's encoder memory),
/// each computed exactly as [`Query::attend`] computes it alone: the same dot products, the
/// bias added after, softmax over positions in order, the weighted values summed in order.
struct Block<'a> {
    queries: &'a [&'a [f32]],
    /// (positions, dim), and the values likewise.
    keys: &'a [f32],
    values: &'a [f32],
    bias: &'a [f32],
    dim: usize,
}

impl Block<'_> {
    /// Writes each query's attended values into its `dim` values of `out`.
    fn attend(&self, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if self.dim == x86::DIM
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx2")
        {
            // SAFETY: the CPU supports AVX-512F and AVX2, checked just above; the head size is
            // `x86::DIM`.
            return unsafe { x86::attend_block_avx512(self, out) };
        }
        #[cfg(target_arch = "x86_64")]
        if self.dim == x86::DIM && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above; the head size is `x86::DIM`.
            return unsafe { x86::attend_block_avx2(self, out) };
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { self.attend_avx2(out) };
        }
        self.attend_lanes(out)
    }

    /// # Safety
    ///
    /// The CPU must support AVX2 (the code itself is safe; only its instructions need it).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn attend_avx2(&self, out: &mut [f32]) {
        self.attend_lanes(out)
    }

    #[inline(always)]
    fn attend_lanes(&self, out: &mut [f32]) {
        let (n, dim) = (self.bias.len(), self.dim);
        let group = self.queries.len();
        let mut scores = vec![0f32; group * n];
        for (t, key) in self.keys.chunks_exact(dim).enumerate() {
            for (b, q) in self.queries.iter().enumerate() {
                scores[b * n + t] = dot(q, key);
            }
        }
        let mut sums = vec![0f32; group];
        for (scores, sum) in scores.chunks_mut(n).zip(&mut sums) {
            for (s, b) in scores.iter_mut().zip(self.bias) {
                *s += b;
            }
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                *sum += *s;
            }
        }
        out.fill(0.0);
        for (t, value) in self.values.chunks_exact(dim).enumerate() {
            for (b, out) in out.chunks_mut(dim).enumerate() {
                let p = scores[b * n + t] / sums[b];
                for (o, x) in out.iter_mut().zip(value) {
                    *o += p * x;
                }
            }
        }
    }
}

/// One query's attention over `n` positions whose keys and values `key(t)` and `value(t)`
/// return: softmax over t of `q · key(t) + bias_t`, then `Σ_t p_t value(t)`.
struct Query<'a, K, V> {
    q: &'a [f32],
    n: usize,
    key: K,
    value: V,
    bias: Option<&'a [f32]>,
}

impl<'a, K: Fn(usize) -> &'a [f32], V: Fn(usize) -> &'a [f32]> Query<'a, K, V> {
    /// Writes the attended values into `out` (`scores`: reused scratch). Runs the AVX2 build of
    /// the same code where the CPU has it (identical results: Rust does not contract into FMA).
    fn attend(&self, scores: &mut Vec<f32>, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { self.attend_avx2(scores, out) };
        }
        self.attend_lanes(scores, out)
    }

    /// # Safety
    ///
    /// The CPU must support AVX2 (the code itself is safe; only its instructions need it).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn attend_avx2(&self, scores: &mut Vec<f32>, out: &mut [f32]) {
        self.attend_lanes(scores, out)
    }

    #[inline(always)]
    fn attend_lanes(&self, scores: &mut Vec<f32>, out: &mut [f32]) {
        scores.clear();
        // A plain loop, not an iterator adapter: the adapter's fold is compiled on its own,
        // without this function's AVX2, and its dot products ran four lanes wide.
        for t in 0..self.n {
            scores.push(dot(self.q, (self.key)(t)));
        }
        if let Some(bias) = self.bias {
            for (s, b) in scores.iter_mut().zip(bias) {
                *s += b;
            }
        }
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for s in scores.iter_mut() {
            *s -= max;
        }
        super::expf::exp_in_place(scores);
        let sum = scores.iter().fold(0f32, |sum, &s| sum + s);
        out.fill(0.0);
        for (t, p) in scores.iter().enumerate() {
            let p = p / sum;
            for (o, x) in out.iter_mut().zip((self.value)(t)) {
                *o += p * x;
            }
        }
    }
}

/// [`Block`] for heads of 64 values (T5-base, opus-mt), with AVX2: the same operations as
/// [`Block::attend_lanes`], arranged so that nothing waits. Eight positions' dot products are
/// computed side by side (each in eight lanes, as [`dot`]), and their lanes summed in [`dot`]'s
/// order after a transpose, so that lane `j` of the sum is position `j`'s score; the weighted
/// sum of the values keeps each query's 64 outputs in registers over all positions.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{dot, Block};

    /// The head size this path takes.
    pub(super) const DIM: usize = 64;

    /// # Safety
    ///
    /// The CPU must support AVX2, and `block.dim` must be [`DIM`]; `out` holds `DIM` values per
    /// query.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn attend_block_avx2(block: &Block, out: &mut [f32]) {
        let n = block.bias.len();
        let group = block.queries.len();
        assert!(out.len() >= group * DIM);
        // SAFETY: the CPU supports AVX2 (the caller's guarantee).
        let (scores, sums) = unsafe { softmax_scores::<false>(block) };
        for (b, out) in out.chunks_mut(DIM).take(group).enumerate() {
            let mut acc = [_mm256_setzero_ps(); 8];
            for (t, value) in block.values.chunks_exact(DIM).take(n).enumerate() {
                let p = _mm256_set1_ps(scores[b * n + t] / sums[b]);
                for (k, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: `value` has DIM = 64 values.
                    let v = unsafe { _mm256_loadu_ps(value.as_ptr().add(8 * k)) };
                    *acc = _mm256_add_ps(*acc, _mm256_mul_ps(p, v));
                }
            }
            for (k, acc) in acc.iter().enumerate() {
                // SAFETY: `out` has DIM = 64 values.
                unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(8 * k), *acc) };
            }
        }
    }

    /// [`attend_block_avx2`] with the weighted sum of the values in AVX-512: each value row
    /// is loaded once for up to [`VALUE_GROUP`] queries, whose 64 outputs stay in four
    /// registers each. Every output is still `Σ_t p_t v_t` with a separate multiply and add
    /// per position in order, and `p_t` the same division, so the results are bit for bit
    /// those of [`attend_block_avx2`]; it does the same arithmetic in about a third of the
    /// instructions (the weighted sum was about half of a T5 decoder step's cross-attention).
    ///
    /// # Safety
    ///
    /// The CPU must support AVX-512F and AVX2, and `block.dim` must be [`DIM`]; `out` holds
    /// `DIM` values per query.
    #[target_feature(enable = "avx2,avx512f")]
    pub(super) unsafe fn attend_block_avx512(block: &Block, out: &mut [f32]) {
        let n = block.bias.len();
        let group = block.queries.len();
        assert!(out.len() >= group * DIM);
        // SAFETY: the CPU supports AVX2 and AVX-512F (the caller's guarantee).
        let (mut probs, sums) = unsafe { softmax_scores::<true>(block) };
        for (row, sum) in probs.chunks_mut(n.max(1)).zip(&sums) {
            for p in row {
                *p /= sum;
            }
        }
        let mut first = 0;
        while first < group {
            let now = (group - first).min(VALUE_GROUP);
            let at = WeightedSum {
                probs: &probs[first * n..][..now * n],
                values: &block.values[..n * DIM],
                n,
            };
            let out = &mut out[first * DIM..][..now * DIM];
            // SAFETY: the CPU supports AVX-512F (the caller's guarantee); `now` is 1..=6.
            unsafe {
                match now {
                    1 => at.run::<1>(out),
                    2 => at.run::<2>(out),
                    3 => at.run::<3>(out),
                    4 => at.run::<4>(out),
                    5 => at.run::<5>(out),
                    _ => at.run::<6>(out),
                }
            }
            first += now;
        }
    }

    /// Queries whose weighted sums [`attend_block_avx512`] takes together: 6 x 4 accumulators
    /// and 4 value registers fit AVX-512's 32.
    const VALUE_GROUP: usize = 6;

    /// `Σ_t probs[g][t] values[t]` for G queries, `n` positions of [`DIM`] values.
    struct WeightedSum<'a> {
        probs: &'a [f32],
        values: &'a [f32],
        n: usize,
    }

    impl WeightedSum<'_> {
        /// Writes G x [`DIM`] values into `out`.
        ///
        /// # Safety
        ///
        /// The CPU must support AVX-512F.
        #[target_feature(enable = "avx512f")]
        unsafe fn run<const G: usize>(&self, out: &mut [f32]) {
            assert!(
                self.probs.len() >= G * self.n
                    && self.values.len() >= self.n * DIM
                    && out.len() >= G * DIM
            );
            let mut acc = [[_mm512_setzero_ps(); 4]; G];
            for t in 0..self.n {
                // SAFETY: t < n, and `values` holds n rows of DIM = 64 values (asserted).
                let v: [__m512; 4] = std::array::from_fn(|k| unsafe {
                    _mm512_loadu_ps(self.values.as_ptr().add(t * DIM + 16 * k))
                });
                for (g, acc) in acc.iter_mut().enumerate() {
                    let p = _mm512_set1_ps(self.probs[g * self.n + t]);
                    for (acc, v) in acc.iter_mut().zip(&v) {
                        *acc = _mm512_add_ps(*acc, _mm512_mul_ps(p, *v));
                    }
                }
            }
            for (g, acc) in acc.iter().enumerate() {
                for (k, acc) in acc.iter().enumerate() {
                    // SAFETY: `out` holds G x DIM values (asserted).
                    unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(g * DIM + 16 * k), *acc) };
                }
            }
        }
    }

    /// Each query's scores over the block's positions, bias added and exponentiated after
    /// subtracting their maximum, (group, n), with each query's sum of them.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, and `block.dim` must be [`DIM`].
    ///
    /// With `WIDE_EXP` the exponentials are [`crate::models::expf::x86::exp_avx512`]'s (the C library's `expf` bit for
    /// bit on every input a softmax gives it), and then the CPU must support AVX-512F too.
    #[target_feature(enable = "avx2")]
    unsafe fn softmax_scores<const WIDE_EXP: bool>(block: &Block) -> (Vec<f32>, Vec<f32>) {
        let n = block.bias.len();
        let group = block.queries.len();
        assert!(block.keys.len() >= n * DIM && block.values.len() >= n * DIM);
        assert!(block.queries.iter().all(|q| q.len() >= DIM));
        let mut scores = vec![0f32; group * n];
        let full = n / 8 * 8;
        for t in (0..full).step_by(8) {
            for (b, q) in block.queries.iter().enumerate() {
                // SAFETY: positions t..t + 8 are below n, whose keys the assert above checks.
                let s = unsafe { dots8(q.as_ptr(), block.keys.as_ptr().add(t * DIM)) };
                scores[b * n + t..][..8].copy_from_slice(&s);
            }
        }
        for t in full..n {
            for (b, q) in block.queries.iter().enumerate() {
                scores[b * n + t] = dot(q, &block.keys[t * DIM..][..DIM]);
            }
        }
        let mut sums = vec![0f32; group];
        for (scores, sum) in scores.chunks_mut(n.max(1)).zip(&mut sums) {
            for (s, b) in scores.iter_mut().zip(block.bias) {
                *s += b;
            }
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            if WIDE_EXP {
                for s in scores.iter_mut() {
                    *s -= max;
                }
                // SAFETY: the CPU supports AVX-512F (the caller's guarantee with WIDE_EXP).
                unsafe { crate::models::expf::x86::exp_avx512(scores) };
                // The sum in the same order as below.
                *sum = scores.iter().fold(*sum, |sum, &s| sum + s);
            } else {
                for s in scores.iter_mut() {
                    *s = (*s - max).exp();
                    *sum += *s;
                }
            }
        }
        (scores, sums)
    }

    /// `dot(q, key)` for eight consecutive keys of 64 values, bit for bit.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2; `q` points to 64 values, `keys` to 8 x 64.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn dots8(q: *const f32, keys: *const f32) -> [f32; 8] {
        // SAFETY: the caller guarantees the memory.
        unsafe {
            let mut acc = [_mm256_setzero_ps(); 8];
            for i in 0..DIM / 8 {
                let q = _mm256_loadu_ps(q.add(8 * i));
                for (j, acc) in acc.iter_mut().enumerate() {
                    let k = _mm256_loadu_ps(keys.add(j * DIM + 8 * i));
                    *acc = _mm256_add_ps(*acc, _mm256_mul_ps(q, k));
                }
            }
            // Transpose: lane j of `lanes[l]` is lane l of position j's accumulator.
            let [a0, a1, a2, a3, a4, a5, a6, a7] = acc;
            let (t0, t1) = (_mm256_unpacklo_ps(a0, a1), _mm256_unpackhi_ps(a0, a1));
            let (t2, t3) = (_mm256_unpacklo_ps(a2, a3), _mm256_unpackhi_ps(a2, a3));
            let (t4, t5) = (_mm256_unpacklo_ps(a4, a5), _mm256_unpackhi_ps(a4, a5));
            let (t6, t7) = (_mm256_unpacklo_ps(a6, a7), _mm256_unpackhi_ps(a6, a7));
            let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            let lanes = [
                _mm256_permute2f128_ps::<0x20>(u0, u4),
                _mm256_permute2f128_ps::<0x20>(u1, u5),
                _mm256_permute2f128_ps::<0x20>(u2, u6),
                _mm256_permute2f128_ps::<0x20>(u3, u7),
                _mm256_permute2f128_ps::<0x31>(u0, u4),
                _mm256_permute2f128_ps::<0x31>(u1, u5),
                _mm256_permute2f128_ps::<0x31>(u2, u6),
                _mm256_permute2f128_ps::<0x31>(u3, u7),
            ];
            // dot's `acc.iter().sum()`: lane 0 + lane 1, then + lane 2, ... in order
            let mut sum = lanes[0];
            for lane in &lanes[1..] {
                sum = _mm256_add_ps(sum, *lane);
            }
            let mut out = [0f32; 8];
            _mm256_storeu_ps(out.as_mut_ptr(), sum);
            out
        }
    }
}

/// A dot product in eight lanes (vectorized by the compiler), then the lanes summed.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut acc = [0f32; LANES];
    let (a_main, a_tail) = a.split_at(a.len() - a.len() % LANES);
    let (b_main, b_tail) = b.split_at(a_main.len());
    for (x, y) in a_main.chunks_exact(LANES).zip(b_main.chunks_exact(LANES)) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = a_tail.iter().zip(b_tail).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straightforward attention of one query for comparison.
    fn naive(q: &[f32], keys: &[Vec<f32>], values: &[Vec<f32>], bias: &[f32]) -> Vec<f32> {
        let scores: Vec<f64> = keys
            .iter()
            .zip(bias)
            .map(|(k, b)| q.iter().zip(k).map(|(x, y)| (x * y) as f64).sum::<f64>() + *b as f64)
            .collect();
        let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let sum: f64 = weights.iter().sum();
        (0..q.len())
            .map(|d| {
                (weights.iter().zip(values))
                    .map(|(w, v)| w / sum * v[d] as f64)
                    .sum::<f64>() as f32
            })
            .collect()
    }

    fn value(i: usize) -> f32 {
        ((i * 7919 % 201) as f32 - 100.0) / 100.0
    }

    fn close(a: &[f32], b: &[f32]) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
    }

    /// What a cache should hold, kept the plain way: history[r][h] = the keys (values) each
    /// current row has written so far, in order.
    struct Mirror {
        keys: Vec<Vec<Vec<Vec<f32>>>>,
        values: Vec<Vec<Vec<Vec<f32>>>>,
        heads: usize,
        dim: usize,
    }

    impl Mirror {
        fn new(rows: usize, heads: usize, dim: usize) -> Self {
            let empty = vec![vec![Vec::new(); heads]; rows];
            let values = empty.clone();
            Self {
                keys: empty,
                values,
                heads,
                dim,
            }
        }

        /// One step of `kv` on made-up q/k/v rows (`salt` varies them per step); every row and
        /// head must attend exactly its own history.
        fn step_and_check(&mut self, kv: &mut HostKv, step: usize, salt: usize) {
            let (heads, dim) = (self.heads, self.dim);
            let (rows, inner) = (self.keys.len(), heads * dim);
            let qkv: Vec<f32> = (0..rows * 3 * inner)
                .map(|i| value(i + salt * step))
                .collect();
            let out = kv.step(&qkv, None).unwrap();
            for r in 0..rows {
                for h in 0..heads {
                    let part =
                        |p: usize| qkv[r * 3 * inner + p * inner + h * dim..][..dim].to_vec();
                    self.keys[r][h].push(part(1));
                    self.values[r][h].push(part(2));
                    let bias = vec![0.0; step + 1];
                    let want = naive(&part(0), &self.keys[r][h], &self.values[r][h], &bias);
                    close(&out[r * inner + h * dim..][..dim], &want);
                }
            }
        }

        /// `kv.select_rows(wanted)`, mirrored.
        fn select_rows(&mut self, kv: &mut HostKv, wanted: &[u32]) {
            kv.select_rows(wanted).unwrap();
            self.keys = wanted
                .iter()
                .map(|&r| self.keys[r as usize].clone())
                .collect();
            self.values = wanted
                .iter()
                .map(|&r| self.values[r as usize].clone())
                .collect();
        }
    }

    #[test]
    fn steps_attend_every_position_so_far_through_reorderings() {
        let (rows, heads, dim) = (3, 2, 5);
        let mut kv = HostKv::new(rows, heads, dim);
        let mut mirror = Mirror::new(rows, heads, dim);
        for step in 0..40 {
            mirror.step_and_check(&mut kv, step, 31);
            if step == 4 {
                mirror.select_rows(&mut kv, &[2, 0, 2]);
            }
        }
        assert!(kv.select_rows(&[3]).is_err());
    }

    /// Rows that beam search drops (no candidate continues them) and inputs that leave are
    /// compacted away, and every step still attends exactly each row's own history.
    #[test]
    fn dropped_rows_are_compacted_and_steps_attend_the_same() {
        for (start, seed) in [(6, 1u32), (12, 2), (12, 3), (16, 4)] {
            compacts_and_attends(start, seed);
        }
    }

    fn compacts_and_attends(start: usize, seed: u32) {
        let (heads, dim, steps) = (2, 5, 40);
        let inner = heads * dim;
        let mut kv = HostKv::new(start, heads, dim);
        let mut mirror = Mirror::new(start, heads, dim);
        let mut lcg = seed;
        let mut next = |n: usize| {
            lcg = lcg.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (lcg >> 8) as usize % n
        };
        for step in 0..steps {
            mirror.step_and_check(&mut kv, step, 17);
            let rows = mirror.keys.len();
            // Each row continues one of a few favourites, or itself, or any row; from step 25
            // on, a row leaves every 3 steps.
            let favourites = [next(rows), next(rows)];
            let mut wanted: Vec<u32> = (0..rows)
                .map(|r| match next(4) {
                    0 => r,
                    1 => next(rows),
                    k => favourites[k - 2],
                } as u32)
                .collect();
            if step >= 25 && step % 3 == 0 && rows > 2 {
                wanted.pop();
            }
            mirror.select_rows(&mut kv, &wanted);
        }
        let stored: usize = kv.keys.iter().map(|k| k.len() / inner).sum();
        assert!(
            stored < steps * start / 2,
            "{stored} rows kept of {}",
            steps * start
        );
        assert_eq!(
            stored,
            kv.values.iter().map(|v| v.len() / inner).sum::<usize>()
        );
    }

    #[test]
    fn a_bias_masks_positions_per_head() {
        let (heads, dim) = (2, 4);
        let mut kv = HostKv::new(1, heads, dim);
        let first: Vec<f32> = (0..3 * heads * dim).map(value).collect();
        kv.step(&first, Some(&[0.0, 0.0])).unwrap();
        let second: Vec<f32> = (0..3 * heads * dim).map(|i| value(i + 5)).collect();
        // head 0 sees only position 0, head 1 only position 1
        let out = kv
            .step(&second, Some(&[0.0, f32::MIN, f32::MIN, 0.0]))
            .unwrap();
        close(&out[..dim], &first[2 * heads * dim..][..dim]);
        close(&out[dim..], &second[2 * heads * dim + dim..][..dim]);
    }

    #[test]
    fn cross_attention_serves_groups_of_rows_from_one_memory_row() {
        let (heads, dim, positions, group) = (2, 3, 4, 2);
        let memory_rows = 2;
        let keys: Vec<f32> = (0..memory_rows * heads * positions * dim)
            .map(value)
            .collect();
        let values: Vec<f32> = (0..keys.len()).map(|i| value(i + 11)).collect();
        let bias = [0.0, 0.0, f32::MIN, f32::MIN, 0.0, 0.0, 0.0, 0.0];
        let q: Vec<f32> = (0..memory_rows * group * heads * dim)
            .map(|i| value(i + 3))
            .collect();
        let memory = Memory {
            keys: &keys,
            values: &values,
            bias: &bias,
            heads,
            dim,
        };
        let out = cross(&q, &memory, group).unwrap();
        for row in 0..memory_rows * group {
            let m = row / group;
            for h in 0..heads {
                let at = |t: usize| ((m * heads + h) * positions + t) * dim;
                let ks: Vec<Vec<f32>> = (0..positions)
                    .map(|t| keys[at(t)..][..dim].to_vec())
                    .collect();
                let vs: Vec<Vec<f32>> = (0..positions)
                    .map(|t| values[at(t)..][..dim].to_vec())
                    .collect();
                let qh = &q[(row * heads + h) * dim..][..dim];
                let want = naive(qh, &ks, &vs, &bias[m * positions..][..positions]);
                close(&out[(row * heads + h) * dim..][..dim], &want);
            }
        }
        assert!(cross(&q[1..], &memory, group).is_err());
    }

    /// The AVX-512 weighted sum gives the AVX2 path's bits, for every count of queries (the
    /// value registers take up to six at a time).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_block_equals_avx2_block() {
        if !(std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx2"))
        {
            return;
        }
        let (dim, n) = (x86::DIM, 45);
        let keys: Vec<f32> = (0..n * dim).map(|i| value(i * 3 + 1)).collect();
        let values: Vec<f32> = (0..n * dim).map(|i| value(i + 17) * 2.0).collect();
        let mut bias: Vec<f32> = (0..n).map(|i| value(i + 5)).collect();
        bias[n - 4..].fill(f32::MIN);
        for group in 1..=13 {
            let q: Vec<f32> = (0..group * dim).map(|i| value(i * 5 + 2) * 3.0).collect();
            let queries: Vec<&[f32]> = q.chunks(dim).collect();
            let block = Block {
                queries: &queries,
                keys: &keys,
                values: &values,
                bias: &bias,
                dim,
            };
            let (mut wide, mut narrow) = (vec![0f32; group * dim], vec![0f32; group * dim]);
            // SAFETY: AVX-512F and AVX2 are present, checked above; dim is x86::DIM.
            unsafe {
                x86::attend_block_avx512(&block, &mut wide);
                x86::attend_block_avx2(&block, &mut narrow);
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&wide), bits(&narrow), "{group} queries");
        }
    }

    /// The blocked cross-attention gives, bit for bit, what each query gives alone.
    #[test]
    fn blocked_cross_attention_equals_one_query_at_a_time() {
        for (dim, positions) in [(16, 37), (64, 37), (64, 8), (64, 5)] {
            let (heads, group, memory_rows) = (3, 5, 2);
            let keys: Vec<f32> = (0..memory_rows * heads * positions * dim)
                .map(|i| value(i * 3 + 1))
                .collect();
            let values: Vec<f32> = (0..keys.len()).map(|i| value(i + 17)).collect();
            let mut bias = vec![0f32; memory_rows * positions];
            bias[positions - 3..positions].fill(f32::MIN);
            let q: Vec<f32> = (0..memory_rows * group * heads * dim)
                .map(|i| value(i * 5 + 2) * 3.0)
                .collect();
            let memory = Memory {
                keys: &keys,
                values: &values,
                bias: &bias,
                heads,
                dim,
            };
            let out = cross(&q, &memory, group).unwrap();
            let mut scores = Vec::new();
            for row in 0..memory_rows * group {
                let m = row / group;
                for h in 0..heads {
                    let at = (m * heads + h) * positions * dim;
                    let query = Query {
                        q: &q[(row * heads + h) * dim..][..dim],
                        n: positions,
                        key: |t: usize| &keys[at + t * dim..at + (t + 1) * dim],
                        value: |t: usize| &values[at + t * dim..at + (t + 1) * dim],
                        bias: Some(&bias[m * positions..][..positions]),
                    };
                    let mut alone = vec![0f32; dim];
                    query.attend(&mut scores, &mut alone);
                    let got = &out[(row * heads + h) * dim..][..dim];
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(got), bits(&alone), "dim {dim} row {row} head {h}");
                }
            }
        }
    }
}
