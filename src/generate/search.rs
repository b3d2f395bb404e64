//! Greedy and beam search over any [`Seq2Seq`], one padded batch at a time.
//!
//! Beam search follows transformers 5's vectorized `_beam_search` decision for decision: the
//! top `2 * num_beams` candidates of all beams, a candidate that hits the end token (or the
//! length limit) is a finished hypothesis only if it ranks among the top `num_beams`, its score
//! is divided by `generated_length ** length_penalty` (the end token counted), the `num_beams`
//! best finished hypotheses are kept, and an input stops with transformers' early-stopping
//! heuristic. Scores are f32 with the same -1e9 masks, so ties break the same way.
//!
//! An input whose result can no longer change leaves the batch (its cache rows are dropped), so
//! the rest decode on fewer rows; transformers keeps such rows running but ignores them, so the
//! ids are the same either way.

use crate::parallel;
use candle_core::{Device, Tensor};

use super::config::{EarlyStopping, Settings};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use super::logits::{
    block_max_sum, combine_blocks, greedy_choice, log_prob, top_k_logits_from, torch_topk,
    LogProbs, RowRule, LOG_SUM_BLOCK,
};
use super::Result;
use super::Seq2Seq;

/// transformers' stand-in for "impossible" in beam scores.
const MASKED: f32 = -1.0e9;

/// Generates for every source (ids with the end token) of one batch; returns the generated ids
/// of each (without the decoder start token; the end token included when produced).
pub fn generate_batch<M: Seq2Seq + Sync>(
    model: &M,
    settings: &Settings,
    sources: &[&[u32]],
    device: &Device,
) -> Result<Vec<Vec<u32>>> {
    if sources.is_empty() {
        return Ok(Vec::new());
    }
    in_team(|| {
        let mut cache = prepare(model, sources, device)?;
        if settings.num_beams == 1 {
            greedy(model, settings, &mut cache, sources.len(), device)
        } else {
            beam_search(model, settings, &mut cache, sources.len(), device)
        }
    })
}

/// Runs `f` as a [`parallel::Team`]: on a thread of rayon's global pool, with a second one
/// spinning for the parallel loops of the models' kernels.
///
/// A decoder step is some seventy short parallel loops (every linear layer, attention block
/// and norm). Started from a thread outside the pool, each loop would be injected into the
/// pool's queue while the caller sleeps on a latch until a worker wakes it: two thread
/// switches per loop, and the caller's core idles meanwhile. Started from a worker, a loop is
/// split by work stealing, but the other worker sleeps between loops and is woken through the
/// kernel for each. In a team the partner spins between loops and takes its share at once.
/// The results are the same bits either way (every task writes its own outputs).
pub(super) fn in_team<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    parallel::Team::run(f)
}

/// Whether a beam search with `settings` runs the output layer by blocks ([`BlockedStep`]):
/// a model whose layer can, more than one beam, and no renormalizing (a second log-softmax
/// over whole processed rows).
fn runs_by_blocks<M: Seq2Seq>(model: &M, settings: &Settings) -> bool {
    settings.num_beams > 1 && model.blocked_head() && !settings.renormalize_logits
}

/// The decoder cache of a batch: sources padded, encoded, cross-attention prepared.
pub(super) fn prepare<M: Seq2Seq>(
    model: &M,
    sources: &[&[u32]],
    device: &Device,
) -> Result<M::Cache> {
    let (ids, mask) = pad_batch(sources, model.special_tokens().pad, device)?;
    let encoded = model.encode(&ids, &mask)?;
    Ok(model.start_decoding(&encoded, &mask)?)
}

/// Right-padded (batch, longest) ids and the matching 1/0 mask.
fn pad_batch(sources: &[&[u32]], pad: u32, device: &Device) -> Result<(Tensor, Tensor)> {
    let width = sources.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(sources.len() * width);
    let mut mask = Vec::with_capacity(sources.len() * width);
    for source in sources {
        ids.extend_from_slice(source);
        ids.extend(std::iter::repeat_n(pad, width - source.len()));
        mask.extend(std::iter::repeat_n(1u32, source.len()));
        mask.extend(std::iter::repeat_n(0u32, width - source.len()));
    }
    let shape = (sources.len(), width);
    Ok((
        Tensor::from_vec(ids, shape, device)?,
        Tensor::from_vec(mask, shape, device)?,
    ))
}

/// Runs one decoder step and hands the (rows, vocab) f32 logits to `f` as one host slice,
/// without a copy on the CPU.
pub(super) fn with_logits<M: Seq2Seq, T>(
    model: &M,
    last: &[u32],
    cache: &mut M::Cache,
    device: &Device,
    f: impl FnOnce(&[f32], usize) -> T,
) -> Result<T> {
    let last = Tensor::new(last, device)?;
    let logits = model.decode_step(&last, cache)?;
    let vocab = logits.dim(1)?;
    let logits = logits.to_dtype(candle_core::DType::F32)?.contiguous()?;
    if let Device::Cpu = logits.device() {
        let (storage, layout) = logits.storage_and_layout();
        if let candle_core::Storage::Cpu(cpu) = &*storage {
            let all = cpu.as_slice::<f32>()?;
            let start = layout.start_offset();
            return Ok(f(&all[start..start + layout.shape().elem_count()], vocab));
        }
    }
    let host = logits.flatten_all()?.to_vec1::<f32>()?;
    Ok(f(&host, vocab))
}

/// Keeps `rows` of the cache unless that is every row in order.
pub(super) fn keep_rows<M: Seq2Seq>(
    model: &M,
    cache: &mut M::Cache,
    rows: &[u32],
    current: usize,
    device: &Device,
) -> Result<()> {
    let identity = rows.len() == current && rows.iter().enumerate().all(|(i, &r)| i as u32 == r);
    if !identity {
        model.select_rows(cache, &Tensor::new(rows, device)?)?;
    }
    Ok(())
}

fn greedy<M: Seq2Seq>(
    model: &M,
    settings: &Settings,
    cache: &mut M::Cache,
    batch: usize,
    device: &Device,
) -> Result<Vec<Vec<u32>>> {
    let start = settings.decoder_start_token_id;
    let mut histories: Vec<Vec<u32>> = vec![vec![start]; batch];
    // Inputs still decoding, in cache-row order.
    let mut active: Vec<usize> = (0..batch).collect();
    for step in 0..settings.max_new_tokens {
        let last: Vec<u32> = active
            .iter()
            .map(|&i| *histories[i].last().unwrap())
            .collect();
        let chosen = with_logits(model, &last, cache, device, |logits, vocab| {
            parallel::map(active.len(), |r| {
                let rule = RowRule::for_history(settings, &histories[active[r]]);
                greedy_choice(&logits[r * vocab..][..vocab], &rule)
            })
        })?;
        let mut kept = Vec::with_capacity(active.len());
        let mut still = Vec::with_capacity(active.len());
        for (row, (&i, token)) in active.iter().zip(chosen).enumerate() {
            histories[i].push(token);
            if !settings.eos_token_ids.contains(&token) {
                kept.push(row as u32);
                still.push(i);
            }
        }
        if still.is_empty() || step + 1 == settings.max_new_tokens {
            break;
        }
        keep_rows(model, cache, &kept, active.len(), device)?;
        active = still;
    }
    Ok(histories.into_iter().map(|h| h[1..].to_vec()).collect())
}

fn beam_search<M: Seq2Seq>(
    model: &M,
    settings: &Settings,
    cache: &mut M::Cache,
    batch: usize,
    device: &Device,
) -> Result<Vec<Vec<u32>>> {
    let beams = settings.num_beams;
    // transformers keeps (1 + number of end tokens) * num_beams candidates, at least 2 * num_beams.
    let keep = (1 + settings.eos_token_ids.len()).max(2) * beams;
    let mut inputs: Vec<BeamInput> = (0..batch).map(|_| BeamInput::new(settings)).collect();
    let mut active: Vec<usize> = (0..batch).collect();
    // At the first step all beams of an input are the same sequence: decode it once.
    let mut rows_per_input = 1;
    for generated in 0..settings.max_new_tokens {
        let last: Vec<u32> = (active.iter())
            .flat_map(|&i| &inputs[i].running[..rows_per_input])
            .map(|hyp| *hyp.history.last().unwrap())
            .collect();
        let rules: Vec<RowRule> = (0..last.len())
            .map(|row| {
                let hyp = &inputs[active[row / rows_per_input]].running[row % rows_per_input];
                RowRule::for_history(settings, &hyp.history)
            })
            .collect();
        let candidates = if runs_by_blocks(model, settings) {
            let step = BlockedStep {
                inputs: &inputs,
                active: &active,
                rows_per_input,
                rules: &rules,
                keep,
            };
            step.candidates(model, &last, cache, device)?
        } else {
            with_logits(model, &last, cache, device, |logits, vocab| {
                let rows: Vec<LogProbs> = parallel::map(rules.len(), |r| {
                    let row = &logits[r * vocab..][..vocab];
                    LogProbs::new(row, &rules[r], settings.renormalize_logits)
                });
                parallel::map(active.len(), |group| {
                    let own = &rows[group * rows_per_input..(group + 1) * rows_per_input];
                    inputs[active[group]].candidates(keep, own, |beam| beam % rows_per_input)
                })
            })?
        };
        let mut next_rows = Vec::with_capacity(active.len() * beams);
        let mut still = Vec::with_capacity(active.len());
        for ((group, &i), candidates) in active.iter().enumerate().zip(candidates) {
            let input = &mut inputs[i];
            input.advance(settings, &candidates, generated);
            if !input.done {
                still.push(i);
                let rows = input.last_beams.iter().map(|&b| b % rows_per_input);
                next_rows.extend(rows.map(|b| (group * rows_per_input + b) as u32));
            }
        }
        if still.is_empty() {
            break;
        }
        let current = active.len() * rows_per_input;
        keep_rows(model, cache, &next_rows, current, device)?;
        active = still;
        rows_per_input = beams;
    }
    Ok(inputs.iter().map(BeamInput::best).collect())
}

/// What the output layer leaves of one row when it runs by blocks: the row's log-softmax shift
/// and its best logits.
struct RowBest {
    max: f32,
    log_sum: f32,
    /// The row's `depth` largest logits (value, id), best first, the lower id first among
    /// equal values (as [`top_k_logits`] orders them).
    best: Vec<(f32, u32)>,
}

/// What one block of the output layer leaves of each row.
struct BlockPart {
    /// (max, sum) of each row's block (`block_max_sum`).
    sums: Vec<(f32, f32)>,
    /// Each row's best logits in the block, rows one after another; row r's end at `ends[r]`.
    best: Vec<(f32, u32)>,
    ends: Vec<usize>,
}

impl BlockPart {
    fn row(&self, r: usize) -> &[(f32, u32)] {
        let start = if r == 0 { 0 } else { self.ends[r - 1] };
        &self.best[start..self.ends[r]]
    }
}

/// One beam-search step whose output layer is reduced a block of the vocabulary at a time
/// (`Seq2Seq::decode_step_blocks`): no (hypotheses, vocabulary) matrix is written or read
/// again, which saves its memory (so more hypotheses fit in a batch) and whole-matrix passes.
///
/// The candidates are those of the full scan bit for bit. The log-softmax shift is the same
/// (`log_sum_exp` sums a row by the same blocks), and each row keeps its best
/// `keep + 1 + banned` logits: the `keep + 1` best candidates of an input are among them. When
/// those `keep + 1` scores are all distinct and finite, `torch.topk` returns the first `keep`
/// in that order whatever the rest of the rows hold. Otherwise (equal scores, whose order
/// depends on torch's heap; or NaN and infinite values) that input's rows go through the output
/// layer again, whole (the products are bit-identical for a row alone), and the full scan
/// decides.
struct BlockedStep<'a> {
    inputs: &'a [BeamInput],
    active: &'a [usize],
    rows_per_input: usize,
    rules: &'a [RowRule],
    keep: usize,
}

impl BlockedStep<'_> {
    fn candidates<M: Seq2Seq>(
        &self,
        model: &M,
        last: &[u32],
        cache: &mut M::Cache,
        device: &Device,
    ) -> Result<Vec<Vec<Candidate>>> {
        let depth = self.keep + 1 + self.rules.iter().map(RowRule::banned).max().unwrap_or(0);
        let (hidden, rows) = blocked_rows(model, last, cache, device, depth)?;
        let per = self.rows_per_input;
        let mut out = Vec::with_capacity(self.active.len());
        // A forced row's values do not depend on its logits (0 for the forced ids, -inf for
        // the rest): the full scan runs on a stand-in row.
        let mut stand_in: Vec<f32> = Vec::new();
        for (group, &i) in self.active.iter().enumerate() {
            let span = group * per..(group + 1) * per;
            let (own, rules) = (&rows[span.clone()], &self.rules[span.clone()]);
            let input = &self.inputs[i];
            if rules.iter().all(|r| matches!(r, RowRule::Force(_))) {
                stand_in.resize(model.vocab_size(), 0.0);
                let full: Vec<LogProbs> = (rules.iter())
                    .map(|rule| LogProbs::new(&stand_in, rule, false))
                    .collect();
                out.push(input.candidates(self.keep, &full, |b| b % per));
                continue;
            }
            if let Some(found) = input.distinct_candidates(self.keep, own, rules, |b| b % per) {
                out.push(found);
                continue;
            }
            let picked: Vec<u32> = (span.start as u32..span.end as u32).collect();
            let picked = Tensor::new(picked.as_slice(), device)?;
            let logits = model.logits_of(&hidden.index_select(&picked, 0)?)?;
            let logits = logits.to_dtype(candle_core::DType::F32)?;
            let vocab = logits.dim(1)?;
            let logits = logits.flatten_all()?.to_vec1::<f32>()?;
            let full: Vec<LogProbs> = (logits.chunks(vocab).zip(rules))
                .map(|(logits, rule)| LogProbs::new(logits, rule, false))
                .collect();
            out.push(input.candidates(self.keep, &full, |b| b % per));
        }
        Ok(out)
    }
}

/// Runs one decoder step with the output layer by blocks; returns the rows the layer took and,
/// for each, its [`RowBest`] with `depth` logits.
fn blocked_rows<M: Seq2Seq>(
    model: &M,
    last: &[u32],
    cache: &mut M::Cache,
    device: &Device,
    depth: usize,
) -> Result<(Tensor, Vec<RowBest>)> {
    let rows = last.len();
    let blocks = model.vocab_size().div_ceil(LOG_SUM_BLOCK);
    let slots: Vec<OnceLock<BlockPart>> = (0..blocks).map(|_| OnceLock::new()).collect();
    // Per row, the largest `depth`-th best value of the blocks done so far: the row's `depth`
    // best values are not below it, so a block keeps only values at or above it. Which blocks
    // are done first varies; the kept values always include the row's `depth` best, and the
    // merge below takes exactly those.
    let floors: Vec<AtomicU32> = (0..rows)
        .map(|_| AtomicU32::new(ordered(f32::NEG_INFINITY)))
        .collect();
    let reduce = |first: usize, values: &[f32]| {
        let width = values.len() / rows;
        let mut part = BlockPart {
            sums: Vec::with_capacity(rows),
            best: Vec::with_capacity(rows * depth),
            ends: Vec::with_capacity(rows),
        };
        for (row, floor) in values.chunks(width).zip(&floors) {
            let (max, sum) = block_max_sum(row);
            part.sums.push((max, sum));
            let below = unordered(floor.load(Ordering::Relaxed));
            // A block whose maximum is below the floor has nothing to keep (most blocks, once
            // a few are done): skip its scan.
            let best = if max < below {
                Vec::new()
            } else {
                top_k_logits_from(row, depth, below)
            };
            if best.len() == depth {
                floor.fetch_max(ordered(best[depth - 1].0), Ordering::Relaxed);
            }
            part.best
                .extend(best.into_iter().map(|(v, id)| (v, id + first as u32)));
            part.ends.push(part.best.len());
        }
        let _ = slots[first / LOG_SUM_BLOCK].set(part);
    };
    let last = Tensor::new(last, device)?;
    let hidden = model.decode_step_blocks(&last, cache, LOG_SUM_BLOCK, &reduce)?;
    let parts: Vec<BlockPart> = (slots.into_iter())
        .map(|slot| slot.into_inner())
        .collect::<Option<_>>()
        .ok_or_else(|| candle_core::Error::Msg("a block of the output layer is missing".into()))?;
    let order = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    let best = parallel::map(rows, |r| {
        let (max, log_sum) = combine_blocks(parts.iter().map(|part| part.sums[r]));
        let mut best: Vec<(f32, u32)> = (parts.iter())
            .flat_map(|part| part.row(r).iter().copied())
            .collect();
        if best.len() > depth {
            best.select_nth_unstable_by(depth, order);
            best.truncate(depth);
        }
        best.sort_unstable_by(order);
        RowBest { max, log_sum, best }
    });
    Ok((hidden, best))
}

/// An f32 (not NaN) as a u32 of the same order, for an atomic maximum.
fn ordered(x: f32) -> u32 {
    let bits = x.to_bits();
    if bits >> 31 == 1 {
        !bits
    } else {
        bits | 1 << 31
    }
}

/// The inverse of [`ordered`].
fn unordered(x: u32) -> f32 {
    f32::from_bits(if x >> 31 == 1 { x & !(1 << 31) } else { !x })
}

/// A running hypothesis: its tokens (start token first) and summed log-probability.
#[derive(Debug, Clone)]
struct Running {
    history: Vec<u32>,
    score: f32,
}

/// A slot of the finished list; slots start as placeholders scored -1e9.
#[derive(Debug, Clone)]
struct Slot {
    history: Vec<u32>,
    score: f32,
    finished: bool,
}

/// A candidate continuation: which running beam, which token, and its accumulated score.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    beam: usize,
    token: u32,
    score: f32,
}

/// The beam search state of one input.
#[derive(Debug)]
struct BeamInput {
    running: Vec<Running>,
    slots: Vec<Slot>,
    /// transformers' is_early_stop_heuristic_unsatisfied: better hypotheses may still come.
    improvable: bool,
    done: bool,
    /// For each running beam, the beam of the previous step it extends (its cache row).
    last_beams: Vec<usize>,
}

impl BeamInput {
    fn new(settings: &Settings) -> Self {
        let start = vec![settings.decoder_start_token_id];
        let running = (0..settings.num_beams)
            .map(|b| Running {
                history: start.clone(),
                score: if b == 0 { 0.0 } else { MASKED },
            })
            .collect();
        let slot = Slot {
            history: start,
            score: MASKED,
            finished: false,
        };
        Self {
            running,
            slots: vec![slot; settings.num_beams],
            improvable: true,
            done: false,
            last_beams: Vec::new(),
        }
    }

    /// The best `keep` candidates over all beams, in the order of transformers'
    /// `torch.topk` over the (beams × vocab) accumulated scores, ties included; `row_of(beam)`
    /// gives each beam's row of log-probabilities.
    fn candidates(
        &self,
        keep: usize,
        rows: &[LogProbs],
        row_of: impl Fn(usize) -> usize,
    ) -> Vec<Candidate> {
        let vocab = rows[0].width();
        let split = |i: usize| (i / vocab, (i % vocab) as u32);
        let score = |i: usize| {
            let (beam, token) = split(i);
            rows[row_of(beam)].value(token) + self.running[beam].score
        };
        let n = self.running.len() * vocab;
        // The next (beam, token) that may beat `bound`: one threshold scan per beam's row.
        let next = |from: usize, bound: f32| {
            let mut i = from;
            while i < n {
                let (beam, token) = split(i);
                let row = &rows[row_of(beam)];
                match row.first_that_may_exceed(token, self.running[beam].score, bound) {
                    Some(token) => return beam * vocab + token as usize,
                    None => i = (beam + 1) * vocab,
                }
            }
            n
        };
        (torch_topk(n, keep, score, next).into_iter())
            .map(|i| {
                let (beam, token) = split(i);
                Candidate {
                    beam,
                    token,
                    score: score(i),
                }
            })
            .collect()
    }

    /// The best `keep` candidates from each beam's best logits (see [`BlockedStep`]), or None
    /// when they do not settle it: fewer than `keep + 1` allowed logits in a row, a shift or a
    /// score that is not finite, or equal scores among the best `keep + 1`.
    fn distinct_candidates(
        &self,
        keep: usize,
        rows: &[RowBest],
        rules: &[RowRule],
        row_of: impl Fn(usize) -> usize,
    ) -> Option<Vec<Candidate>> {
        let mut all: Vec<Candidate> = Vec::with_capacity(self.running.len() * (keep + 1));
        for (beam, running) in self.running.iter().enumerate() {
            let (row, rule) = (&rows[row_of(beam)], &rules[row_of(beam)]);
            if !(row.max.is_finite() && row.log_sum.is_finite()) {
                return None;
            }
            let allowed = (row.best.iter()).filter(|&&(_, id)| rule.allows(id));
            let before = all.len();
            // The score as the full scan computes it: LogProbs::value(token) + beam score.
            all.extend(allowed.take(keep + 1).map(|&(logit, token)| Candidate {
                beam,
                token,
                score: log_prob(logit, row.max, row.log_sum) + running.score,
            }));
            if all.len() - before < keep + 1 {
                return None;
            }
        }
        all.sort_by(|a, b| b.score.total_cmp(&a.score));
        let top = &all[..keep + 1];
        let settled = top.iter().all(|c| c.score.is_finite())
            && top.windows(2).all(|w| w[0].score > w[1].score);
        settled.then(|| all[..keep].to_vec())
    }

    /// One step of transformers' bookkeeping after `generated` tokens become `generated + 1`.
    fn advance(&mut self, settings: &Settings, candidates: &[Candidate], generated: usize) {
        let beams = settings.num_beams;
        let at_limit = generated + 1 >= settings.max_new_tokens;
        let hits: Vec<bool> = (candidates.iter())
            .map(|c| at_limit || settings.eos_token_ids.contains(&c.token))
            .collect();
        let extend = |c: &Candidate| {
            let mut history = self.running[c.beam].history.clone();
            history.push(c.token);
            history
        };

        // Finished hypotheses: only the top `num_beams` candidates may finish.
        let denominator = ((generated + 1) as f64).powf(settings.length_penalty) as f32;
        let full = self.slots.iter().all(|s| s.finished);
        let mut merged: Vec<Slot> = std::mem::take(&mut self.slots);
        for (rank, (c, &hit)) in candidates.iter().zip(&hits).enumerate() {
            let finishes = hit && rank < beams;
            let mut score = c.score / denominator;
            if full && settings.early_stopping == EarlyStopping::True {
                score += MASKED;
            }
            if !self.improvable {
                score += MASKED;
            }
            if !finishes {
                score += MASKED;
            }
            merged.push(Slot {
                history: extend(c),
                score,
                finished: finishes,
            });
        }
        // torch.topk's order among equal scores, as for the candidates.
        let best = torch_topk(merged.len(), beams, |i| merged[i].score, |i, _| i);
        self.slots = best.into_iter().map(|i| merged[i].clone()).collect();

        // Running beams: the best candidates that did not finish.
        let masked: Vec<f32> = (candidates.iter().zip(&hits))
            .map(|(c, &hit)| if hit { c.score + MASKED } else { c.score })
            .collect();
        let order: Vec<(f32, usize)> = (torch_topk(masked.len(), beams, |i| masked[i], |i, _| i)
            .into_iter())
        .map(|i| (masked[i], i))
        .collect();
        self.running = (order.iter())
            .map(|&(score, i)| Running {
                history: extend(&candidates[i]),
                score,
            })
            .collect();
        self.last_beams = order.iter().map(|&(_, i)| candidates[i].beam).collect();

        self.improvable = self.improvable && self.may_improve(settings, generated + 1);
        let all_finished = self.slots.iter().all(|s| s.finished);
        self.done = !self.improvable
            || (settings.early_stopping == EarlyStopping::True && all_finished)
            || at_limit;
    }

    /// transformers' `_check_early_stop_heuristic` for one input.
    fn may_improve(&self, settings: &Settings, generated: usize) -> bool {
        let lp = settings.length_penalty;
        let length = if settings.early_stopping == EarlyStopping::Never && lp > 0.0 {
            settings.max_new_tokens
        } else {
            generated
        };
        let best_possible = self.running[0].score / (length as f64).powf(lp) as f32;
        let worst = self
            .slots
            .iter()
            .map(|s| s.score)
            .fold(f32::INFINITY, f32::min);
        self.slots
            .iter()
            .any(|s| best_possible > if s.finished { worst } else { MASKED })
    }

    fn best(&self) -> Vec<u32> {
        self.slots[0].history[1..].to_vec()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::AtomicUsize;

    use candle_core::{DType, Device, Tensor};

    use super::*;
    use crate::generate::{EarlyStopping, SpecialTokens};

    /// Next-token logits as a function of (source ids, generated ids so far).
    pub type Table = dyn Fn(&[u32], &[u32]) -> Vec<f32> + Send + Sync;

    /// A Seq2Seq whose "network" is a table: it keeps each row's source and prefix in the cache,
    /// exactly as a real model keeps keys and values, so wrong row bookkeeping shows up.
    pub struct FakeModel {
        pub table: Box<Table>,
        pub special: SpecialTokens,
        pub vocab: usize,
        /// Rows decoded so far, summed over steps: shows that finished inputs leave the batch.
        pub rows_decoded: AtomicUsize,
        /// Whether the logits go out by blocks (`decode_step_blocks`), as mtsum's f32 CPU
        /// models do.
        pub blocked: bool,
        /// Rows whose full logits were asked for again (`logits_of`).
        pub rows_again: AtomicUsize,
    }

    pub struct FakeCache {
        rows: Vec<(Vec<u32>, Vec<u32>)>,
    }

    impl Seq2Seq for FakeModel {
        type Cache = FakeCache;

        fn encode(&self, ids: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
            // The "hidden state" is the ids themselves, padding zeroed by the mask.
            (ids * mask)?.to_dtype(DType::F32)?.unsqueeze(2)
        }

        fn start_decoding(
            &self,
            encoded: &Tensor,
            mask: &Tensor,
        ) -> candle_core::Result<FakeCache> {
            let ids = encoded.squeeze(2)?.to_dtype(DType::U32)?.to_vec2::<u32>()?;
            let mask = mask.to_vec2::<u32>()?;
            let rows = (ids.iter().zip(&mask))
                .map(|(ids, mask)| {
                    let real = ids.iter().zip(mask).filter(|(_, &m)| m == 1);
                    (real.map(|(&id, _)| id).collect(), Vec::new())
                })
                .collect();
            Ok(FakeCache { rows })
        }

        fn decode_step(&self, last: &Tensor, cache: &mut FakeCache) -> candle_core::Result<Tensor> {
            let last = last.to_vec1::<u32>()?;
            assert_eq!(last.len(), cache.rows.len(), "one token per cached row");
            self.rows_decoded.fetch_add(last.len(), Ordering::Relaxed);
            let mut out = Vec::new();
            for ((source, prefix), token) in cache.rows.iter_mut().zip(last) {
                if !(prefix.is_empty() && token == self.special.decoder_start) {
                    prefix.push(token);
                }
                out.extend((self.table)(source, prefix));
            }
            Tensor::from_vec(out, (cache.rows.len(), self.vocab), &Device::Cpu)
        }

        fn blocked_head(&self) -> bool {
            self.blocked
        }

        /// The "hidden rows" are the logits themselves, so `logits_of` is the identity.
        fn decode_step_blocks(
            &self,
            last: &Tensor,
            cache: &mut FakeCache,
            block: usize,
            f: &(dyn Fn(usize, &[f32]) + Sync),
        ) -> candle_core::Result<Tensor> {
            assert!(self.blocked);
            let logits = self.decode_step(last, cache)?;
            let rows = logits.to_vec2::<f32>()?;
            for first in (0..self.vocab).step_by(block) {
                let width = (self.vocab - first).min(block);
                let values: Vec<f32> = (rows.iter())
                    .flat_map(|row| row[first..first + width].iter().copied())
                    .collect();
                f(first, &values);
            }
            Ok(logits)
        }

        fn logits_of(&self, hidden: &Tensor) -> candle_core::Result<Tensor> {
            self.rows_again.fetch_add(hidden.dim(0)?, Ordering::Relaxed);
            Ok(hidden.clone())
        }

        fn select_rows(&self, cache: &mut FakeCache, rows: &Tensor) -> candle_core::Result<()> {
            let rows = rows.to_vec1::<u32>()?;
            cache.rows = rows
                .iter()
                .map(|&r| cache.rows[r as usize].clone())
                .collect();
            Ok(())
        }

        fn special_tokens(&self) -> &SpecialTokens {
            &self.special
        }

        fn vocab_size(&self) -> usize {
            self.vocab
        }

        fn max_source_positions(&self) -> Option<usize> {
            None
        }
    }

    const EOS: u32 = 0;
    const START: u32 = 1;

    pub fn fake(
        vocab: usize,
        table: impl Fn(&[u32], &[u32]) -> Vec<f32> + Send + Sync + 'static,
    ) -> FakeModel {
        FakeModel {
            table: Box::new(table),
            special: SpecialTokens {
                decoder_start: START,
                eos: EOS,
                pad: START,
                ..Default::default()
            },
            vocab,
            rows_decoded: AtomicUsize::new(0),
            blocked: false,
            rows_again: AtomicUsize::new(0),
        }
    }

    pub fn settings(num_beams: usize, max_new_tokens: usize) -> Settings {
        Settings {
            num_beams,
            max_new_tokens,
            min_new_tokens: 0,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::False,
            no_repeat_ngram_size: 0,
            bad_words_ids: vec![],
            forced_bos_token_id: None,
            forced_eos_token_id: vec![],
            renormalize_logits: false,
            eos_token_ids: vec![EOS],
            pad_token_id: START,
            decoder_start_token_id: START,
        }
    }

    /// Log-probabilities as logits, so that log_softmax gives them back.
    fn probs(p: &[f32]) -> Vec<f32> {
        p.iter().map(|x| x.ln()).collect()
    }

    fn run(model: &FakeModel, settings: &Settings, sources: &[Vec<u32>]) -> Vec<Vec<u32>> {
        let sources: Vec<&[u32]> = sources.iter().map(Vec::as_slice).collect();
        generate_batch(model, settings, &sources, &Device::Cpu).unwrap()
    }

    const A: u32 = 2;
    const B: u32 = 3;

    /// Greedy takes A (0.5) then ends (0.2 in all); beam search finds B, end (0.36).
    fn beam_beats_greedy() -> FakeModel {
        fake(4, |_, prefix| match prefix {
            [] => probs(&[0.1, 1e-9, 0.5, 0.4]),
            [A] => probs(&[0.4, 1e-9, 0.3, 0.3]),
            [B] => probs(&[0.9, 1e-9, 0.05, 0.05]),
            _ => probs(&[0.98, 1e-9, 0.01, 0.01]),
        })
    }

    #[test]
    fn greedy_and_beam_search_choose_as_transformers() {
        let model = beam_beats_greedy();
        assert_eq!(
            run(&model, &settings(1, 5), &[vec![7, 0]]),
            vec![vec![A, EOS]]
        );
        assert_eq!(
            run(&model, &settings(2, 5), &[vec![7, 0]]),
            vec![vec![B, EOS]]
        );
    }

    /// [A, end] 0.3; [A, A, end] 0.24; [B, end] 0.15; [B, B, end] 0.25.
    fn length_matters() -> FakeModel {
        fake(4, |_, prefix| match prefix {
            [] => probs(&[1e-6, 1e-9, 0.6, 0.4]),
            [A] => probs(&[0.5, 1e-9, 0.4, 0.1]),
            [B] => probs(&[0.375, 1e-9, 1e-6, 0.625]),
            _ => probs(&[1.0, 1e-9, 1e-7, 1e-7]),
        })
    }

    #[test]
    fn length_penalty_divides_by_the_generated_length() {
        let model = length_matters();
        let mut s = settings(2, 5);
        s.length_penalty = 0.0; // plain log-probability: the short [A, end] wins
        assert_eq!(run(&model, &s, &[vec![5]]), vec![vec![A, EOS]]);
        s.length_penalty = 1.0; // ln(0.25) / 3 beats ln(0.3) / 2
        assert_eq!(run(&model, &s, &[vec![5]]), vec![vec![B, B, EOS]]);
    }

    #[test]
    fn min_length_max_length_and_forced_eos() {
        let model = beam_beats_greedy();
        let mut s = settings(1, 5);
        s.min_new_tokens = 3;
        let out = run(&model, &s, &[vec![5]]);
        assert!(out[0].len() >= 4 && !out[0][..3].contains(&EOS), "{out:?}");
        let mut s = settings(2, 1);
        assert_eq!(run(&model, &s, &[vec![5]]), vec![vec![A]]);
        s.forced_eos_token_id = vec![EOS];
        assert_eq!(run(&model, &s, &[vec![5]]), vec![vec![EOS]]);
    }

    /// A pseudo-random table whose end token grows likelier with length, so hypotheses end at
    /// varied lengths; the source changes everything.
    fn random_table(vocab: usize) -> FakeModel {
        fake(vocab, move |source, prefix| {
            let mut h: u64 = 1469598103934665603;
            for &t in source.iter().chain([&u32::MAX]).chain(prefix) {
                h = (h ^ t as u64).wrapping_mul(1099511628211);
            }
            (0..vocab as u64)
                .map(|v| {
                    let x =
                        (h ^ v.wrapping_mul(0x9E3779B97F4A7C15)).wrapping_mul(0xBF58476D1CE4E5B9);
                    let noise = (x >> 40) as f32 / (1u64 << 24) as f32 * 4.0;
                    if v == EOS as u64 {
                        noise - 3.0 + prefix.len() as f32 * 0.6
                    } else {
                        noise
                    }
                })
                .collect()
        })
    }

    fn sources(n: usize) -> Vec<Vec<u32>> {
        (0..n)
            .map(|i| {
                let len = 1 + (i * 7) % 11;
                let mut s: Vec<u32> = (0..len)
                    .map(|j| 2 + ((i * 13 + j * 5) % 20) as u32)
                    .collect();
                s.push(EOS);
                s
            })
            .collect()
    }

    #[test]
    fn batched_equals_one_by_one_and_finished_inputs_leave() {
        let inputs = sources(9);
        for (beams, early) in [
            (1, EarlyStopping::False),
            (2, EarlyStopping::True),
            (4, EarlyStopping::False),
            (6, EarlyStopping::Never),
        ] {
            let mut s = settings(beams, 12);
            s.early_stopping = early;
            s.length_penalty = if beams == 4 { 1.3 } else { 0.8 };
            let model = random_table(23);
            let alone: Vec<Vec<u32>> = inputs
                .iter()
                .map(|i| run(&model, &s, std::slice::from_ref(i)).remove(0))
                .collect();
            let rows_alone = model.rows_decoded.swap(0, Ordering::Relaxed);
            let batched = run(&model, &s, &inputs);
            assert_eq!(batched, alone, "beams {beams}");
            assert_eq!(
                model.rows_decoded.load(Ordering::Relaxed),
                rows_alone,
                "beams {beams}: rows of finished inputs left"
            );
            let lengths: std::collections::BTreeSet<usize> = alone.iter().map(Vec::len).collect();
            assert!(lengths.len() > 2, "outputs of varied length: {lengths:?}");
        }
    }

    /// A vocabulary of a few blocks whose logits come in steps of 1/8 (so equal scores are
    /// common) or as free values.
    fn wide_table(vocab: usize, coarse: bool) -> FakeModel {
        let inner = random_table(vocab);
        fake(vocab, move |source, prefix| {
            let row = (inner.table)(source, prefix);
            match coarse {
                true => row.iter().map(|x| (x * 8.0).round() / 8.0).collect(),
                false => row,
            }
        })
    }

    #[test]
    fn the_output_layer_by_blocks_chooses_as_the_full_scan() {
        let vocab = 2 * LOG_SUM_BLOCK + 77;
        for coarse in [false, true] {
            for (beams, ngram, min) in [(2, 0, 0), (4, 0, 5), (4, 3, 0), (5, 2, 3)] {
                let mut s = settings(beams, 10);
                s.no_repeat_ngram_size = ngram;
                s.min_new_tokens = min;
                s.length_penalty = 1.1;
                s.bad_words_ids = vec![vec![7], vec![9, 11]];
                if beams == 5 {
                    s.forced_eos_token_id = vec![EOS];
                }
                let inputs = sources(6);
                let full = run(&wide_table(vocab, coarse), &s, &inputs);
                let mut blocked = wide_table(vocab, coarse);
                blocked.blocked = true;
                assert_eq!(
                    run(&blocked, &s, &inputs),
                    full,
                    "beams {beams}, coarse {coarse}"
                );
                // Equal scores send an input's rows through the full scan; free values do not.
                let again = blocked.rows_again.load(Ordering::Relaxed);
                assert_eq!(again > 0, coarse, "rows again: {again}");
            }
        }
    }

    #[test]
    fn no_repeat_ngram_is_respected() {
        let model = random_table(6);
        let mut s = settings(3, 30);
        s.no_repeat_ngram_size = 2;
        s.min_new_tokens = 15;
        for out in run(&model, &s, &sources(4)) {
            let mut seen = std::collections::HashSet::new();
            let with_start: Vec<u32> = std::iter::once(START).chain(out.iter().copied()).collect();
            for w in with_start.windows(2) {
                assert!(seen.insert(w.to_vec()), "repeated {w:?} in {out:?}");
            }
        }
    }
}
