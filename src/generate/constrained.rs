//! Lexically constrained beam search: dynamic beam allocation (Post & Vilar 2018, "Fast
//! lexically constrained decoding with dynamic beam allocation for neural machine
//! translation"), over the same [`Seq2Seq`] steps, logits processors and batch bookkeeping as
//! the plain search in [`super::search`].
//!
//! Each input brings constraints: token-id sequences that must each appear, contiguously, in
//! its output. A hypothesis tracks which constraints it has met and how far it is into the one
//! it is placing (a token that breaks off a started constraint undoes that progress). At every
//! step the candidates of an input are the `k` best tokens of each of its beams (which holds
//! the `k` best over all beams and each beam's own best) and, for each beam, the tokens that
//! advance its constraints (the next token of the started one, else the first token of every
//! unmet one). The candidates are sorted into banks by the number of constraint tokens they
//! have met, and the `k` beams are shared among the banks: `k / banks` each, the rest to the
//! fullest banks, and slots a bank cannot fill go round-robin to the others, fullest first.
//! So hypotheses that have placed more of the constraints survive even where the model finds
//! them unlikely, and the model chooses where and how to place them.
//!
//! The end token (and the length limit) finishes a hypothesis only once every constraint is
//! met; a hypothesis that would end earlier is dropped. An input stops at the length limit,
//! when it has no beam left, or when it has `k` finished hypotheses and its best running beam
//! (its score divided by `length ** length_penalty`) cannot beat the `k`-th best of them, as
//! transformers' default early stopping. The best finished hypothesis is the output; an input
//! with none gives `None` (its constraints could not be placed within the length limit), and
//! the caller keeps its unconstrained translation.
//!
//! This search is not transformers' (transformers has dropped constrained beam search): it is
//! only ever run for inputs that have constraints, and inputs without any never come here.

use crate::parallel;
use candle_core::Device;

use super::config::{EarlyStopping, Settings};
use super::logits::{LogProbs, RowRule};
use super::search::{in_team, keep_rows, prepare, with_logits};
use super::Result;
use super::Seq2Seq;

/// Beams of a constrained search under greedy settings (`num_beams` 1): a small beam is what
/// lets dynamic beam allocation keep a hypothesis that is placing a constraint beside the
/// model's favourite. Settings with more beams keep theirs.
pub const CONSTRAINED_BEAMS: usize = 4;

/// The beams a constrained search runs with under `settings`.
pub fn constrained_beams(settings: &Settings) -> usize {
    settings.num_beams.max(CONSTRAINED_BEAMS)
}

/// Generates for every source of one batch with its constraints (token-id sequences, each
/// non-empty; every input has at least one); returns the generated ids of each (as
/// [`super::search::generate_batch`]), or None where no hypothesis placed every constraint
/// within the length limit. `continuations[id]`: the token continues the word before it; such
/// a token never follows a placed constraint, so that a term is not glued to the next word
/// (`▁police` + `s`); ids beyond the slice count as word starts.
pub fn generate_constrained<M: Seq2Seq + Sync>(
    model: &M,
    settings: &Settings,
    sources: &[&[u32]],
    constraints: &[Vec<Vec<u32>>],
    continuations: &[bool],
    device: &Device,
) -> Result<Vec<Option<Vec<u32>>>> {
    in_team(|| {
        assert_eq!(
            sources.len(),
            constraints.len(),
            "constraints for every source"
        );
        if sources.is_empty() {
            return Ok(Vec::new());
        }
        let mut cache = prepare(model, sources, device)?;
        let beams = constrained_beams(settings);
        let mut inputs: Vec<Input> = (constraints.iter())
            .map(|c| {
                Input::new(
                    settings,
                    c.iter().filter(|c| !c.is_empty()).cloned().collect(),
                )
            })
            .collect();
        let mut active: Vec<usize> = (0..sources.len()).collect();
        for generated in 0..settings.max_new_tokens {
            // Each active input's rows, in order: as many as it has running beams.
            let rows_of: Vec<usize> = active.iter().map(|&i| inputs[i].running.len()).collect();
            let offsets: Vec<usize> = (rows_of.iter())
                .scan(0, |at, &n| {
                    let start = *at;
                    *at += n;
                    Some(start)
                })
                .collect();
            let last: Vec<u32> = (active.iter())
                .flat_map(|&i| &inputs[i].running)
                .map(|hyp| *hyp.history.last().unwrap())
                .collect();
            let steps = with_logits(model, &last, &mut cache, device, |logits, vocab| {
                let hyps: Vec<&Hyp> = active.iter().flat_map(|&i| &inputs[i].running).collect();
                let rules: Vec<RowRule> = (hyps.iter())
                    .map(|hyp| RowRule::for_history(settings, &hyp.history))
                    .collect();
                let rows: Vec<LogProbs> = parallel::map(rules.len(), |r| {
                    let row = &logits[r * vocab..][..vocab];
                    LogProbs::new(row, &rules[r], settings.renormalize_logits)
                });
                parallel::map(active.len(), |group| {
                    let own = &rows[offsets[group]..offsets[group] + rows_of[group]];
                    inputs[active[group]].step(settings, beams, own, continuations, generated)
                })
            })?;
            let mut next_rows = Vec::new();
            let mut still = Vec::with_capacity(active.len());
            for ((group, &i), step) in active.iter().enumerate().zip(steps) {
                let input = &mut inputs[i];
                input.apply(settings, beams, step, generated);
                if !input.done {
                    still.push(i);
                    let rows = input.parents.iter().map(|&b| (offsets[group] + b) as u32);
                    next_rows.extend(rows);
                }
            }
            if still.is_empty() {
                break;
            }
            let current = rows_of.iter().sum();
            keep_rows(model, &mut cache, &next_rows, current, device)?;
            active = still;
        }
        Ok(inputs.iter().map(Input::best).collect())
    })
}

/// How far a hypothesis is with its input's constraints.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Progress {
    /// Per constraint: placed in full.
    met: Vec<bool>,
    /// The constraint being placed and how many of its tokens are in place (1 or more, fewer
    /// than its length).
    partial: Option<(usize, usize)>,
    /// The last token completed a constraint: the next must not continue its word.
    just_met: bool,
}

impl Progress {
    fn new(constraints: usize) -> Self {
        Self {
            met: vec![false; constraints],
            partial: None,
            just_met: false,
        }
    }

    /// Constraint tokens in place: the bank of the hypothesis.
    fn tokens(&self, constraints: &[Vec<u32>]) -> usize {
        let met: usize = (self.met.iter().zip(constraints))
            .filter(|(&met, _)| met)
            .map(|(_, c)| c.len())
            .sum();
        met + self.partial.map_or(0, |(_, at)| at)
    }

    fn complete(&self) -> bool {
        self.partial.is_none() && self.met.iter().all(|&m| m)
    }

    /// The progress after `token`.
    fn after(&self, constraints: &[Vec<u32>], token: u32) -> Self {
        let mut next = self.clone();
        next.just_met = false;
        if let Some((c, at)) = self.partial {
            next.partial = None;
            if constraints[c][at] == token {
                match at + 1 == constraints[c].len() {
                    true => (next.met[c], next.just_met) = (true, true),
                    false => next.partial = Some((c, at + 1)),
                }
                return next;
            }
        }
        // The token may start an unmet constraint (the first of them, in the given order).
        let starts = (0..constraints.len()).find(|&c| !next.met[c] && constraints[c][0] == token);
        if let Some(c) = starts {
            match constraints[c].len() {
                1 => (next.met[c], next.just_met) = (true, true),
                _ => next.partial = Some((c, 1)),
            }
        }
        next
    }

    /// The tokens that advance the constraints.
    fn wanted(&self, constraints: &[Vec<u32>]) -> Vec<u32> {
        if let Some((c, at)) = self.partial {
            return vec![constraints[c][at]];
        }
        let mut tokens: Vec<u32> = (constraints.iter().zip(&self.met))
            .filter(|(_, &met)| !met)
            .map(|(c, _)| c[0])
            .collect();
        tokens.sort_unstable();
        tokens.dedup();
        tokens
    }
}

/// A running hypothesis: its tokens (start token first), summed log-probability, progress.
#[derive(Debug, Clone)]
struct Hyp {
    history: Vec<u32>,
    score: f32,
    progress: Progress,
}

/// A hypothesis that ended with every constraint met; `score` divided by the length penalty.
#[derive(Debug, Clone)]
struct Finished {
    history: Vec<u32>,
    score: f32,
}

/// What one step chose for one input.
struct Step {
    /// The new running beams, each with the beam it extends.
    running: Vec<(usize, Hyp)>,
    finished: Vec<Finished>,
}

/// The constrained search state of one input.
struct Input {
    constraints: Vec<Vec<u32>>,
    running: Vec<Hyp>,
    finished: Vec<Finished>,
    /// For each running beam, the beam of the previous step it extends (its cache row).
    parents: Vec<usize>,
    done: bool,
}

impl Input {
    fn new(settings: &Settings, constraints: Vec<Vec<u32>>) -> Self {
        let start = Hyp {
            history: vec![settings.decoder_start_token_id],
            score: 0.0,
            progress: Progress::new(constraints.len()),
        };
        Self {
            constraints,
            running: vec![start],
            finished: Vec::new(),
            parents: Vec::new(),
            done: false,
        }
    }

    /// The candidates of this step and the `beams` of them that go on (dynamic beam
    /// allocation); `rows` holds one row of log-probabilities per running beam.
    fn step(
        &self,
        settings: &Settings,
        beams: usize,
        rows: &[LogProbs],
        continuations: &[bool],
        generated: usize,
    ) -> Step {
        let at_limit = generated + 1 >= settings.max_new_tokens;
        let constraints = &self.constraints;
        let mut candidates: Vec<(usize, u32, f32)> = Vec::new();
        for (beam, (hyp, row)) in self.running.iter().zip(rows).enumerate() {
            // Right after a placed constraint, no piece that would glue a word to it; a few
            // more of the best are looked at so that the beam still has its `beams`.
            let glued = |token: &u32| {
                hyp.progress.just_met && continuations.get(*token as usize) == Some(&true)
            };
            let width = if hyp.progress.just_met {
                4 * beams
            } else {
                beams
            };
            let best = row.top_k(width).into_iter().map(|(_, token)| token);
            for token in best.chain(hyp.progress.wanted(constraints)) {
                if !glued(&token) {
                    candidates.push((beam, token, hyp.score + row.value(token)));
                }
            }
        }
        candidates.sort_by_key(|c| (c.0, c.1));
        candidates.dedup_by(|a, b| (a.0, a.1) == (b.0, b.1));
        candidates.retain(|c| c.2.is_finite());

        let denominator = ((generated + 1) as f64).powf(settings.length_penalty) as f32;
        let mut finished = Vec::new();
        // Candidates that go on, by bank.
        let total: usize = constraints.iter().map(Vec::len).sum();
        let mut banks: Vec<Vec<(usize, Hyp)>> = vec![Vec::new(); total + 1];
        for (beam, token, score) in candidates {
            let parent = &self.running[beam];
            let progress = parent.progress.after(constraints, token);
            let mut history = parent.history.clone();
            history.push(token);
            if at_limit || settings.eos_token_ids.contains(&token) {
                // Only a hypothesis with every constraint in place may end.
                if progress.complete() {
                    finished.push(Finished {
                        history,
                        score: score / denominator,
                    });
                }
                continue;
            }
            let bank = progress.tokens(constraints);
            banks[bank].push((
                beam,
                Hyp {
                    history,
                    score,
                    progress,
                },
            ));
        }
        for bank in &mut banks {
            // Best first; equal scores keep the earlier beam and lower token first (stable).
            bank.sort_by(|a, b| b.1.score.total_cmp(&a.1.score));
        }
        Step {
            running: allocate(banks, beams),
            finished,
        }
    }

    fn apply(&mut self, settings: &Settings, beams: usize, step: Step, generated: usize) {
        self.finished.extend(step.finished);
        // Best first; among equals the one found first.
        self.finished.sort_by(|a, b| b.score.total_cmp(&a.score));
        self.finished.truncate(beams);
        let (parents, running): (Vec<usize>, Vec<Hyp>) = step.running.into_iter().unzip();
        self.parents = parents;
        self.running = running;
        let at_limit = generated + 1 >= settings.max_new_tokens;
        let full = self.finished.len() >= beams;
        let hopeless = full && {
            let length = (generated + 1) as f64;
            let bound = (self.running.iter())
                .map(|h| h.score / length.powf(settings.length_penalty) as f32)
                .fold(f32::NEG_INFINITY, f32::max);
            let worst = self.finished[beams - 1].score;
            settings.early_stopping == EarlyStopping::True || bound <= worst
        };
        self.done = at_limit || self.running.is_empty() || hopeless;
    }

    fn best(&self) -> Option<Vec<u32>> {
        self.finished.first().map(|f| f.history[1..].to_vec())
    }
}

/// Dynamic beam allocation: `beams` slots shared among the banks (index = constraint tokens
/// met), `beams / banks` each and the remainder to the fullest banks; slots a bank cannot fill
/// go round-robin to banks with candidates left, fullest first. Each bank is sorted best first;
/// the result is sorted by score, best first.
fn allocate<T>(banks: Vec<Vec<(usize, T)>>, beams: usize) -> Vec<(usize, T)>
where
    T: Scored,
{
    let count = banks.len();
    let share = |bank: usize| beams / count + usize::from(bank >= count - beams % count);
    let mut banks: Vec<std::collections::VecDeque<(usize, T)>> =
        banks.into_iter().map(Into::into).collect();
    let mut chosen = Vec::with_capacity(beams);
    for (b, bank) in banks.iter_mut().enumerate().rev() {
        let take = share(b).min(bank.len());
        chosen.extend(bank.drain(..take));
    }
    while chosen.len() < beams && banks.iter().any(|b| !b.is_empty()) {
        for bank in banks.iter_mut().rev() {
            if chosen.len() < beams {
                chosen.extend(bank.pop_front());
            }
        }
    }
    chosen.sort_by(|a, b| b.1.score().total_cmp(&a.1.score()));
    chosen
}

/// What [`allocate`] ranks by.
trait Scored {
    fn score(&self) -> f32;
}

impl Scored for Hyp {
    fn score(&self) -> f32 {
        self.score
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::search::generate_batch;
    use crate::generate::search::tests::{fake, settings};

    impl Scored for f32 {
        fn score(&self) -> f32 {
            *self
        }
    }

    #[test]
    fn progress_follows_and_abandons_constraints() {
        let cs = vec![vec![5, 6, 7], vec![9]];
        let p = Progress::new(2);
        assert_eq!(p.wanted(&cs), vec![5, 9]);
        let p = p.after(&cs, 5).after(&cs, 6);
        assert_eq!((p.tokens(&cs), p.wanted(&cs)), (2, vec![7]));
        // Broken off: progress undone; the breaking token may start the other constraint.
        let q = p.after(&cs, 9);
        assert_eq!(
            (q.tokens(&cs), q.met.clone(), q.partial),
            (1, vec![false, true], None)
        );
        let done = p.after(&cs, 7).after(&cs, 9);
        assert!(done.complete());
        assert_eq!(done.tokens(&cs), 4);
        // A broken-off start that restarts the same constraint.
        let r = Progress::new(2).after(&cs, 5).after(&cs, 5);
        assert_eq!(r.partial, Some((0, 1)));
    }

    #[test]
    fn allocation_shares_beams_among_banks() {
        let bank =
            |scores: &[f32]| -> Vec<(usize, f32)> { scores.iter().map(|&s| (0, s)).collect() };
        // Three banks, four beams: one each, the extra one to the fullest bank.
        let chosen = allocate(
            vec![
                bank(&[-1.0, -2.0, -3.0]),
                bank(&[-5.0, -6.0]),
                bank(&[-9.0, -10.0]),
            ],
            4,
        );
        let scores: Vec<f32> = chosen.iter().map(|c| c.1).collect();
        assert_eq!(scores, vec![-1.0, -5.0, -9.0, -10.0]);
        // Empty banks give their slots to the others, fullest first.
        let chosen = allocate(vec![bank(&[-1.0, -2.0, -3.0]), bank(&[]), bank(&[-7.0])], 4);
        let scores: Vec<f32> = chosen.iter().map(|c| c.1).collect();
        assert_eq!(scores, vec![-1.0, -2.0, -3.0, -7.0]);
    }

    const EOS: u32 = 0;

    /// The model prefers 2, 3, end; tokens 4..8 are unlikely.
    fn stubborn() -> crate::generate::search::tests::FakeModel {
        fake(9, |_, prefix| {
            let mut row = vec![-8.0f32; 9];
            row[1] = -30.0;
            match prefix.len() {
                0 => row[2] = 0.0,
                1 => row[3] = 0.0,
                _ => row[EOS as usize] = 0.0,
            }
            row
        })
    }

    fn contains(haystack: &[u32], needle: &[u32]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn constraints_are_placed_for_greedy_and_beam_settings() {
        let model = stubborn();
        let sources: Vec<&[u32]> = vec![&[7, 0], &[5, 6, 0]];
        let constraints = vec![vec![vec![6, 7]], vec![vec![5], vec![8, 4, 6]]];
        for beams in [1, 2, 5] {
            let s = settings(beams, 12);
            let out = generate_constrained(&model, &s, &sources, &constraints, &[], &Device::Cpu)
                .unwrap();
            for (out, cs) in out.iter().zip(&constraints) {
                let out = out.as_ref().expect("placed");
                assert_eq!(out.last(), Some(&EOS), "{out:?}");
                for c in cs {
                    assert!(contains(out, c), "beams {beams}: {c:?} in {out:?}");
                }
            }
            // Alone as in a batch.
            for (i, source) in sources.iter().enumerate() {
                let alone = generate_constrained(
                    &model,
                    &s,
                    std::slice::from_ref(source),
                    &constraints[i..i + 1],
                    &[],
                    &Device::Cpu,
                )
                .unwrap();
                let batched =
                    generate_constrained(&model, &s, &sources, &constraints, &[], &Device::Cpu)
                        .unwrap();
                assert_eq!(alone[0], batched[i]);
            }
        }
        // The unconstrained search is untouched: 2, 3, end.
        let plain = generate_batch(&model, &settings(1, 12), &sources, &Device::Cpu).unwrap();
        assert_eq!(plain, vec![vec![2, 3, EOS]; 2]);
    }

    #[test]
    fn a_constraint_that_cannot_fit_gives_none() {
        let model = stubborn();
        let sources: Vec<&[u32]> = vec![&[7, 0]];
        // Three constraint tokens do not fit in two.
        let constraints = vec![vec![vec![4, 5, 6]]];
        let out = generate_constrained(
            &model,
            &settings(1, 2),
            &sources,
            &constraints,
            &[],
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(out, vec![None]);
        // They fit in three: the limit itself ends the hypothesis.
        let out = generate_constrained(
            &model,
            &settings(1, 3),
            &sources,
            &constraints,
            &[],
            &Device::Cpu,
        )
        .unwrap();
        assert!(contains(out[0].as_ref().unwrap(), &[4, 5, 6]), "{out:?}");
    }

    #[test]
    fn no_word_piece_is_glued_to_a_placed_constraint() {
        // After 6 the model wants 8, a piece that continues a word; then the end.
        let model = fake(9, |_, prefix| {
            let mut row = vec![-8.0f32; 9];
            row[1] = -30.0;
            match prefix.last() {
                Some(6) => row[8] = 0.0,
                Some(8) | Some(3) => row[EOS as usize] = 0.0,
                _ => row[2] = 0.0,
            }
            if prefix.len() > 4 {
                row[EOS as usize] = 1.0;
            }
            row
        });
        let sources: Vec<&[u32]> = vec![&[7, 0]];
        let constraints = vec![vec![vec![5, 6]]];
        let mut continuations = vec![false; 9];
        continuations[8] = true;
        let after_six = |out: &[u32]| out[out.iter().position(|&t| t == 6).unwrap() + 1];
        for beams in [1, 4] {
            let s = settings(beams, 10);
            let free = generate_constrained(&model, &s, &sources, &constraints, &[], &Device::Cpu)
                .unwrap();
            assert_eq!(after_six(free[0].as_ref().unwrap()), 8, "{free:?}");
            let kept = (generate_constrained(
                &model,
                &s,
                &sources,
                &constraints,
                &continuations,
                &Device::Cpu,
            ))
            .unwrap();
            let kept = kept[0].as_ref().unwrap();
            assert!(contains(kept, &[5, 6]) && after_six(kept) != 8, "{kept:?}");
        }
    }
}
