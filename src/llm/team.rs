//! The engine's parallel loops, and a team of two threads that runs them without sleeping
//! while one token is generated.
//!
//! Why: one generated token of a small model is about a hundred small products (Gemma 3 270M:
//! 0.2-1.4 MB of weights each, tens of microseconds on two cores) with a little serial work
//! between them. On rayon's pool each product wakes the sleeping second thread through the
//! kernel (a futex) and the thread arrives tens of microseconds later, often after the
//! product is done: the second core idles through most of the token. llama.cpp's threads spin
//! between the ops of a graph instead. [`Team::run`] does that for the duration of one
//! forward pass: the leader (the thread running the pass) posts each loop's tasks, the partner
//! (one rayon thread, taken for the pass) spins waiting for them, both take tasks from one
//! counter, and the leader waits for the last one. A partner that waits longer than the
//! serial work between loops takes (a few hundred microseconds) parks until the next loop, so
//! on a loaded machine it does not hold a core the leader needs. Outside a team, [`for_each`] is rayon's
//! parallel loop.
//!
//! Protocol: `cursor` holds the loop's epoch (high 32 bits) and the next task (low 32 bits);
//! the leader publishes a loop's closure and task count before the epoch (release), the
//! partner reads them after seeing the epoch (acquire). The partner announces itself in
//! `active` before it re-reads the cursor and touches the closure; the leader closes the
//! cursor when the loop's tasks are done and waits until no partner is active before the
//! closure (on its stack) goes away. Tasks are taken by compare-and-swap on the whole cursor,
//! so a stale partner never takes a task of a later loop.

use std::cell::{Cell, UnsafeCell};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::thread::Thread;

use rayon::prelude::*;

/// The cursor's low bits: the next task, or [`CLOSED`] when the loop takes no more.
const INDEX: u64 = 0xFFFF_FFFF;
const CLOSED: u64 = INDEX;
/// Looks at the cursor before the partner parks, and before a waiting leader starts yielding
/// its core between looks (a few hundred microseconds: longer than the serial work between
/// a token's loops).
const SPINS: u32 = 4_000;

/// A loop's closure with its lifetime erased; valid while its loop is open (see the module
/// doc).
type Task = *const (dyn Fn(usize) + Sync);

/// What the leader and the partner share.
struct Shared {
    cursor: AtomicU64,
    /// The open loop's closure and task count, written only while no partner is active.
    task: UnsafeCell<Option<Task>>,
    tasks: UnsafeCell<u64>,
    finished: AtomicUsize,
    active: AtomicUsize,
    stop: AtomicBool,
    /// A task of the partner's panicked.
    panicked: AtomicBool,
    /// The partner parked after waiting [`SPINS`] looks for a loop, and its thread.
    sleeping: AtomicBool,
    partner: OnceLock<Thread>,
}

// SAFETY: the cells are written by the leader only while no partner can read them (the
// protocol in the module doc); everything else is atomic.
unsafe impl Sync for Shared {}

thread_local! {
    /// The team this thread leads, while it leads one.
    static LEADING: Cell<Option<*const Shared>> = const { Cell::new(None) };
}

/// A leader and (when rayon lends one) a partner thread for the length of one closure.
pub struct Team;

impl Team {
    /// Runs `work` on one of rayon's threads, with a second one spinning for its parallel
    /// loops ([`for_each`]); with a one-thread pool `work` runs alone.
    pub fn run<R: Send>(work: impl FnOnce() -> R + Send) -> R {
        let shared = Shared {
            cursor: AtomicU64::new(CLOSED),
            task: UnsafeCell::new(None),
            tasks: UnsafeCell::new(0),
            finished: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            partner: OnceLock::new(),
        };
        let shared = &shared;
        rayon::scope(|scope| {
            let leader = rayon::current_thread_index();
            if rayon::current_num_threads() > 1 {
                scope.spawn(move |_| {
                    // The leader itself may pop this task when it waits: it must not spin.
                    if rayon::current_thread_index() != leader {
                        shared.partner();
                    }
                });
            }
            let before = LEADING.with(|l| l.replace(Some(shared as *const Shared)));
            let out = work();
            LEADING.with(|l| l.set(before));
            shared.stop.store(true, Ordering::SeqCst);
            shared.wake();
            out
        })
    }
}

/// Runs `task(0..tasks)`, each index once, on the team this thread leads, else on rayon's
/// pool; returns when all are done.
pub fn for_each(tasks: usize, task: impl Fn(usize) + Sync) {
    match LEADING.with(|l| l.get()) {
        // SAFETY: `LEADING` holds the team only while `Team::run`'s frame, which owns it, runs
        // the work on this thread.
        Some(shared) => unsafe { &*shared }.lead(tasks, &task),
        None => (0..tasks).into_par_iter().for_each(&task),
    }
}

impl Shared {
    /// Posts one loop, takes its tasks alongside the partner, and returns when all are done
    /// and the partner no longer holds the closure.
    fn lead(&self, tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        let epoch = (self.cursor.load(Ordering::Relaxed) >> 32) + 1;
        // SAFETY: the previous loop ended with no partner active and the cursor closed, so no
        // one reads the cells now; the pointer is used only while this loop is open.
        unsafe {
            *self.task.get() = Some(std::mem::transmute::<
                &(dyn Fn(usize) + Sync),
                &'static (dyn Fn(usize) + Sync),
            >(task) as Task);
            *self.tasks.get() = tasks as u64;
        }
        self.finished.store(0, Ordering::Relaxed);
        self.cursor.store(epoch << 32, Ordering::SeqCst);
        self.wake();
        let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.work(epoch, tasks as u64, task)
        }));
        if let Err(payload) = mine {
            self.close(epoch);
            std::panic::resume_unwind(payload);
        }
        wait_until(|| self.finished.load(Ordering::Acquire) >= tasks);
        self.close(epoch);
        if self.panicked.load(Ordering::Relaxed) {
            panic!("a task of the engine's parallel loop panicked on the partner thread");
        }
    }

    /// Unparks the partner if it sleeps. Called after a new loop or `stop` is published
    /// (sequentially consistent, as the partner's `sleeping` and its last look at them, so
    /// either it sees them or we see it asleep).
    fn wake(&self) {
        if self.sleeping.load(Ordering::SeqCst) {
            if let Some(partner) = self.partner.get() {
                partner.unpark();
            }
        }
    }

    /// Ends loop `epoch`: no partner takes a task of it or holds its closure after this.
    fn close(&self, epoch: u64) {
        self.cursor.store((epoch << 32) | CLOSED, Ordering::SeqCst);
        wait_until(|| self.active.load(Ordering::SeqCst) == 0);
    }

    /// Takes and runs tasks of loop `epoch` until none is left.
    fn work(&self, epoch: u64, tasks: u64, task: &(dyn Fn(usize) + Sync)) {
        loop {
            let cursor = self.cursor.load(Ordering::Acquire);
            let next = cursor & INDEX;
            if cursor >> 32 != epoch || next >= tasks {
                return;
            }
            let taken = self.cursor.compare_exchange_weak(
                cursor,
                cursor + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
            if taken.is_ok() {
                task(next as usize);
                self.finished.fetch_add(1, Ordering::Release);
            }
        }
    }

    /// The partner's loop: waits for open loops and helps with them until `stop`; after
    /// [`SPINS`] looks in vain it parks until the leader wakes it (on a loaded machine a
    /// spinning partner would take the core the leader needs).
    fn partner(&self) {
        let _ = self.partner.set(std::thread::current());
        let mut done_epoch = 0;
        let mut spins = 0u32;
        while !self.stop.load(Ordering::Acquire) {
            let cursor = self.cursor.load(Ordering::Acquire);
            let epoch = cursor >> 32;
            if epoch == done_epoch || cursor & INDEX == CLOSED {
                spins += 1;
                if spins < SPINS {
                    std::hint::spin_loop();
                } else {
                    self.sleep(done_epoch);
                    spins = 0;
                }
                continue;
            }
            spins = 0;
            self.active.fetch_add(1, Ordering::SeqCst);
            // Still the same open loop now that the leader can see us: its cells are valid.
            if self.cursor.load(Ordering::SeqCst) >> 32 == epoch
                && self.cursor.load(Ordering::SeqCst) & INDEX != CLOSED
            {
                // SAFETY: the loop is open and we are active: the leader keeps the closure
                // alive and the cells unchanged until we leave.
                let (task, tasks) = unsafe { ((*self.task.get()).map(|t| &*t), *self.tasks.get()) };
                if let Some(task) = task {
                    let run = std::panic::AssertUnwindSafe(|| self.work(epoch, tasks, task));
                    if std::panic::catch_unwind(run).is_err() {
                        self.panicked.store(true, Ordering::Relaxed);
                        // Count the task that panicked so the leader does not wait forever.
                        self.finished.fetch_add(1, Ordering::Release);
                    }
                }
            }
            done_epoch = epoch;
            self.active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Shared {
    /// Parks the partner unless a loop after `done_epoch` or `stop` is already published.
    fn sleep(&self, done_epoch: u64) {
        self.sleeping.store(true, Ordering::SeqCst);
        let cursor = self.cursor.load(Ordering::SeqCst);
        let idle = cursor >> 32 == done_epoch || cursor & INDEX == CLOSED;
        if idle && !self.stop.load(Ordering::SeqCst) {
            std::thread::park();
        }
        self.sleeping.store(false, Ordering::SeqCst);
    }
}

/// Spins until `done`, yielding the core between looks after a while (a thread that is not
/// running, on a loaded machine, is waited for without taking its core).
fn wait_until(done: impl Fn() -> bool) {
    let mut spins = 0;
    while !done() {
        pause(&mut spins);
    }
}

/// One wait between looks at shared state: a spin hint, or after [`SPINS`] of them a yield.
fn pause(spins: &mut u32) {
    *spins += 1;
    if *spins < SPINS {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    /// Every index runs exactly once, loop after loop, led or not.
    #[test]
    fn every_task_runs_once() {
        let check = || {
            for tasks in [0, 1, 2, 7, 64, 1000] {
                let counts: Vec<AtomicU32> = (0..tasks).map(|_| AtomicU32::new(0)).collect();
                for_each(tasks, |i| {
                    counts[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1));
            }
        };
        check();
        Team::run(|| {
            for _ in 0..200 {
                check();
            }
        });
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("pool");
        pool.install(|| Team::run(check));
    }

    /// Work done on the partner is visible to the leader when the loop returns.
    #[test]
    fn results_are_visible_after_the_loop() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("pool");
        pool.install(|| {
            Team::run(|| {
                for round in 0..500u64 {
                    let values: Vec<AtomicU64> = (0..16).map(|_| AtomicU64::new(0)).collect();
                    for_each(16, |i| {
                        values[i].store(round * 100 + i as u64, Ordering::Relaxed)
                    });
                    for (i, v) in values.iter().enumerate() {
                        assert_eq!(v.load(Ordering::Relaxed), round * 100 + i as u64);
                    }
                }
            })
        });
    }
}
