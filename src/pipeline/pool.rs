//! Model calls pooled across the releases of a group.
//!
//! Each release of a group runs as a task (a future) on this one thread. When a task needs a
//! model it parks the call in [`Calls`] and waits; once every task of the group waits, the
//! parked calls of one kind (same model, same settings) go to the engine as ONE `generate`
//! call, whose scheduler sorts all their segments by length and cuts batches by the token
//! budget, and each task gets exactly its own outputs back. So a release's code reads as if
//! it ran alone (`Pipeline::process` is a group of one), and every phase — translation, guard
//! retries, summaries and their chunk rounds, translation of the summaries — is pooled without
//! code of its own.
//!
//! Outputs do not depend on the pooling: the engine gives a segment the same ids alone or in
//! any batch, and each task sees only its own outputs. A pooled call that fails is run again
//! call by call, so the error lands on the release whose input caused it and the others go on.
//!
//! Why futures and not threads: the tasks never need to run at the same time (the engine
//! parallelizes inside a call); they only need to stop at each model call until the group's
//! pooled call has run, which is what an `await` is.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use super::TextGenerator;
use crate::generate::TokenCounts;
use crate::generate::{Generated, GenerationOverrides};
use crate::progress::{Observer, Stage};
use crate::{Error, Result};

/// Token counts and seconds of model calls, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spent {
    pub counts: TokenCounts,
    /// A task's share of the calls' time (see [`Generation`]).
    pub seconds: f64,
}

impl std::ops::AddAssign for Spent {
    fn add_assign(&mut self, other: Spent) {
        self.counts += other.counts;
        self.seconds += other.seconds;
    }
}

/// One task's outputs of a model call, with what they cost. When the call was pooled, the
/// seconds are the task's share of the call by its number of inputs, so that the shares of a
/// group add up to the time the engine spent (the report's throughput) instead of counting a
/// pooled call once per release.
#[derive(Debug, Default)]
pub struct Generation {
    pub texts: Vec<String>,
    pub spent: Spent,
}

impl Generation {
    fn of(outputs: Vec<Generated>, seconds: f64) -> Self {
        let counts = counts(&outputs);
        Generation {
            texts: outputs
                .into_iter()
                .map(|o| o.text.trim().to_string())
                .collect(),
            spent: Spent { counts, seconds },
        }
    }
}

fn counts(outputs: &[Generated]) -> TokenCounts {
    TokenCounts {
        segments: outputs.len(),
        input_tokens: outputs.iter().map(|o| o.input_tokens).sum(),
        generated_tokens: outputs.iter().map(|o| o.output_tokens).sum(),
    }
}

/// What makes calls poolable: the same model (the same object), settings and stage.
#[derive(Clone)]
struct Kind<'m> {
    generator: &'m dyn TextGenerator,
    overrides: GenerationOverrides,
    stage: Stage,
}

impl Kind<'_> {
    fn same(&self, other: &Kind) -> bool {
        std::ptr::addr_eq(self.generator, other.generator)
            && self.stage == other.stage
            && self.overrides == other.overrides
    }
}

/// A task's call, waiting for its group's pooled call.
struct Parked<'m> {
    ticket: usize,
    kind: Kind<'m>,
    inputs: Vec<String>,
}

/// The model calls of a group's tasks: parked until the group runs them, then answered.
#[derive(Default)]
pub struct Calls<'m> {
    parked: RefCell<Vec<Parked<'m>>>,
    answers: RefCell<HashMap<usize, Result<Generation>>>,
    next_ticket: Cell<usize>,
}

impl<'m> Calls<'m> {
    /// `inputs` through `generator`: one output per input, in order. Waits until the group
    /// runs the calls of this kind together (no wait and no call for no inputs).
    pub async fn generate(
        &self,
        generator: &'m dyn TextGenerator,
        inputs: Vec<String>,
        overrides: &GenerationOverrides,
        stage: Stage,
    ) -> Result<Generation> {
        if inputs.is_empty() {
            return Ok(Generation::default());
        }
        let ticket = self.next_ticket.replace(self.next_ticket.get() + 1);
        let kind = Kind {
            generator,
            overrides: overrides.clone(),
            stage,
        };
        self.parked.borrow_mut().push(Parked {
            ticket,
            kind,
            inputs,
        });
        poll_fn(|_| match self.answers.borrow_mut().remove(&ticket) {
            Some(answer) => Poll::Ready(answer),
            None => Poll::Pending,
        })
        .await
    }

    /// Inputs of the parked calls: what the group's tasks wait to give the models.
    fn parked_inputs(&self) -> usize {
        self.parked.borrow().iter().map(|p| p.inputs.len()).sum()
    }

    /// Runs the parked calls of one kind as one engine call and answers them; false when
    /// nothing was parked. The kind with the fewest waiting tasks goes first (the first
    /// parked of them on a tie): those are the tasks that took a detour (a guard's retry, one
    /// more round of a chunked summary), and running them first lets them catch up, so that
    /// the majority's next call takes them along instead of being cut in two.
    fn run_next(&self, observer: &dyn Observer) -> bool {
        let parked = self.parked.take();
        let waiting = |kind: &Kind| parked.iter().filter(|p| p.kind.same(kind)).count();
        let Some(first) = parked.iter().min_by_key(|p| waiting(&p.kind)) else {
            return false;
        };
        let kind = first.kind.clone();
        let (now, later): (Vec<_>, Vec<_>) = parked.into_iter().partition(|p| p.kind.same(&kind));
        *self.parked.borrow_mut() = later;
        let answers = pooled_call(&kind, &now, observer);
        let mut slots = self.answers.borrow_mut();
        slots.extend(now.iter().map(|p| p.ticket).zip(answers));
        true
    }
}

/// The parked calls of one kind as one engine call, split back per call. When the pooled call
/// fails, each call runs again alone, so each gets the answer it would have had on its own.
fn pooled_call(kind: &Kind, calls: &[Parked], observer: &dyn Observer) -> Vec<Result<Generation>> {
    let inputs: Vec<String> = calls
        .iter()
        .flat_map(|c| c.inputs.iter().cloned())
        .collect();
    match engine_call(kind, &inputs, observer) {
        Ok((outputs, seconds)) => split(calls, outputs, seconds),
        Err(err) if calls.len() == 1 => vec![Err(err)],
        Err(_) => calls
            .iter()
            .map(|c| engine_call(kind, &c.inputs, observer).map(|(o, s)| Generation::of(o, s)))
            .collect(),
    }
}

/// Each call's outputs of a pooled call, with its share of the seconds by inputs.
fn split(calls: &[Parked], outputs: Vec<Generated>, seconds: f64) -> Vec<Result<Generation>> {
    let total = outputs.len() as f64;
    let mut outputs = outputs.into_iter();
    calls
        .iter()
        .map(|call| {
            let mine: Vec<Generated> = outputs.by_ref().take(call.inputs.len()).collect();
            let share = seconds * call.inputs.len() as f64 / total;
            Ok(Generation::of(mine, share))
        })
        .collect()
}

/// One `generate` call, reported to the observer, checked for one output per input.
fn engine_call(
    kind: &Kind,
    inputs: &[String],
    observer: &dyn Observer,
) -> Result<(Vec<Generated>, f64)> {
    let started = Instant::now();
    let (generator, stage) = (kind.generator, kind.stage);
    observer.stage(stage, 0, inputs.len());
    let outputs = generator.generate(inputs, &kind.overrides, &|done, total| {
        observer.stage(stage, done, total)
    })?;
    if outputs.len() != inputs.len() {
        return Err(Error::Generation(format!(
            "{} returned {} outputs for {} inputs",
            generator.info().repo,
            outputs.len(),
            inputs.len()
        )));
    }
    let seconds = started.elapsed().as_secs_f64();
    observer.generated(stage, counts(&outputs), seconds);
    Ok((outputs, seconds))
}

/// A task of a group: running, or done with its output.
enum Task<'g, T> {
    Running(Pin<Box<dyn Future<Output = T> + 'g>>),
    Done(T),
}

impl<T> Task<'_, T> {
    /// Runs the task until it waits for a model call or ends; true while it is not done.
    fn advance(&mut self) -> bool {
        let Task::Running(future) = self else {
            return false;
        };
        match future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(output) => {
                *self = Task::Done(output);
                false
            }
            Poll::Pending => true,
        }
    }
}

/// Tasks whose model calls are pooled: started one by one, then run together to their ends.
pub struct Group<'g, 'm, T> {
    calls: &'g Calls<'m>,
    tasks: Vec<Task<'g, T>>,
}

impl<'g, 'm, T> Group<'g, 'm, T> {
    /// A group whose tasks make their model calls through `calls` (which must hold no parked
    /// call of another group).
    pub fn new(calls: &'g Calls<'m>) -> Self {
        Group {
            calls,
            tasks: Vec::new(),
        }
    }

    /// Adds a task and runs it up to its first model call (or its end), so that
    /// [`Group::waiting_inputs`] counts what it needs.
    pub fn start(&mut self, task: impl Future<Output = T> + 'g) {
        let mut task = Task::Running(Box::pin(task));
        task.advance();
        self.tasks.push(task);
    }

    /// Inputs the tasks wait to give the models: how full the group is.
    pub fn waiting_inputs(&self) -> usize {
        self.calls.parked_inputs()
    }

    /// Runs every task to its end, pooling their calls, and returns their outputs in the
    /// order the tasks were started.
    pub fn finish(mut self, observer: &dyn Observer) -> Vec<T> {
        loop {
            let mut running = false;
            for task in &mut self.tasks {
                running |= task.advance();
            }
            if !running {
                break;
            }
            let ran = self.calls.run_next(observer);
            assert!(
                ran,
                "a pipeline task waits for something other than a model call"
            );
        }
        self.tasks
            .into_iter()
            .map(|task| match task {
                Task::Done(output) => output,
                Task::Running(_) => unreachable!("the loop ends when every task is done"),
            })
            .collect()
    }
}

/// Groups that fill up as tasks are started: the one pooling loop of the batch, of the stdout
/// forms of `translate` and `summarize`, and of `summarize --lines`. A task is started in the
/// current group; once the group's tasks wait to give the models `limit` inputs or more, that
/// group is run to its end and its outputs come back, and a new group begins. Outputs never
/// depend on where the groups are cut (see the module doc), only how soon they appear.
pub struct Pool<'g, 'm, T> {
    calls: &'g Calls<'m>,
    group: Group<'g, 'm, T>,
    limit: usize,
}

impl<'g, 'm, T> Pool<'g, 'm, T> {
    /// Groups of about `limit` waiting inputs (1: every task alone) making their calls through
    /// `calls`.
    pub fn new(calls: &'g Calls<'m>, limit: usize) -> Self {
        Pool {
            calls,
            group: Group::new(calls),
            limit,
        }
    }

    /// Starts `task`; when it filled the group, the group's outputs in start order.
    pub fn start(
        &mut self,
        task: impl Future<Output = T> + 'g,
        observer: &dyn Observer,
    ) -> Option<Vec<T>> {
        self.group.start(task);
        if self.group.waiting_inputs() < self.limit {
            return None;
        }
        let full = std::mem::replace(&mut self.group, Group::new(self.calls));
        Some(full.finish(observer))
    }

    /// Runs the last group to its end; its outputs in start order.
    pub fn finish(self, observer: &dyn Observer) -> Vec<T> {
        self.group.finish(observer)
    }
}

/// Runs one task alone (a group of one) whose model calls go through `calls`.
pub fn alone<'g, T>(
    calls: &'g Calls<'_>,
    task: impl Future<Output = T> + 'g,
    observer: &dyn Observer,
) -> T {
    let mut group = Group::new(calls);
    group.start(task);
    let output = group.finish(observer).pop();
    output.expect("a group of one task gives one output")
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::generate::ModelInfo;
    use crate::progress::Silent;

    /// Upper-cases its inputs, fails on "bad", and records every call's inputs.
    #[derive(Default)]
    struct Echo {
        info: ModelInfo,
        calls: Mutex<Vec<Vec<String>>>,
    }

    impl TextGenerator for Echo {
        fn info(&self) -> &ModelInfo {
            &self.info
        }
        fn count_tokens(&self, text: &str) -> Result<usize> {
            Ok(text.split_whitespace().count() + 1)
        }
        fn max_input_tokens(&self) -> usize {
            100
        }
        fn settings(&self, _: &GenerationOverrides) -> serde_json::Value {
            serde_json::Value::Null
        }
        fn generate(
            &self,
            inputs: &[String],
            _: &GenerationOverrides,
            _: &dyn Fn(usize, usize),
        ) -> Result<Vec<Generated>> {
            self.calls.lock().unwrap().push(inputs.to_vec());
            if inputs.iter().any(|i| i == "bad") {
                return Err(Error::Generation("cannot handle bad".into()));
            }
            Ok(inputs
                .iter()
                .map(|i| Generated {
                    text: i.to_uppercase(),
                    input_tokens: 1,
                    output_tokens: 1,
                })
                .collect())
        }
    }

    fn strings(texts: &[&str]) -> Vec<String> {
        texts.iter().map(|t| t.to_string()).collect()
    }

    /// A task's calls one after the other: each `(input, strict)` is one call.
    async fn task<'m>(calls: &Calls<'m>, echo: &'m Echo, steps: &[(&str, bool)]) -> Vec<String> {
        let mut outputs = Vec::new();
        for &(input, strict) in steps {
            let overrides = GenerationOverrides {
                no_repeat_ngram_size: strict.then_some(3),
                ..Default::default()
            };
            let answer = calls.generate(echo, strings(&[input]), &overrides, Stage::Translate);
            match answer.await {
                Ok(generation) => outputs.extend(generation.texts),
                Err(err) => outputs.push(err.to_string()),
            }
        }
        outputs
    }

    #[test]
    fn a_detour_runs_first_so_the_next_call_takes_it_along() {
        let echo = Echo::default();
        let calls = Calls::default();
        let mut group = Group::new(&calls);
        group.start(task(&calls, &echo, &[("a1", false), ("a2", false)]));
        group.start(task(
            &calls,
            &echo,
            &[("b0", true), ("b1", false), ("b2", false)],
        ));
        group.start(task(&calls, &echo, &[("c1", false), ("c2", false)]));
        assert_eq!(group.waiting_inputs(), 3);
        let outputs = group.finish(&Silent);
        assert_eq!(
            outputs,
            [
                strings(&["A1", "A2"]),
                strings(&["B0", "B1", "B2"]),
                strings(&["C1", "C2"])
            ]
        );
        let made = echo.calls.into_inner().unwrap();
        let expected = [&["b0"][..], &["a1", "c1", "b1"], &["a2", "b2", "c2"]];
        assert_eq!(made, expected.map(strings));
    }

    #[test]
    fn a_failed_pooled_call_is_run_again_call_by_call() {
        let echo = Echo::default();
        let calls = Calls::default();
        let mut group = Group::new(&calls);
        group.start(task(&calls, &echo, &[("ok", false), ("then", false)]));
        group.start(task(&calls, &echo, &[("bad", false)]));
        let outputs = group.finish(&Silent);
        assert_eq!(outputs[0], strings(&["OK", "THEN"]));
        assert!(outputs[1][0].contains("cannot handle bad"), "{outputs:?}");
        let made = echo.calls.into_inner().unwrap();
        let expected = [&["ok", "bad"][..], &["ok"], &["bad"], &["then"]];
        assert_eq!(made, expected.map(strings));
    }
}
