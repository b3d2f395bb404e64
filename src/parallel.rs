//! Parallel loops for the models' kernels, and a team of two threads that runs them without
//! sleeping while a generation runs.
//!
//! Why: one decoder step of a small model is some seventy short parallel loops (every linear
//! layer, attention block and norm; opus-mt's products take tens of microseconds each on two
//! cores at a beam search's 64 hypotheses) with a little serial work between them. On rayon's
//! pool each loop wakes the sleeping second thread through the kernel (a futex) and the thread
//! arrives tens of microseconds later, often after the loop is done: the second core idles
//! through much of the step (`examples/gemm_bench.rs` measures a decoder step's products at
//! 233-293 GFLOP/s on two threads of one process against 341-351 for two one-thread processes
//! side by side). llama.cpp's threads spin between the ops of a graph instead. [`Team::run`]
//! does that for the length of one closure (a generation, or one token of the GGUF engine): the
//! leader (the thread running the closure) posts each loop's tasks, the partner (one rayon
//! thread, taken for the closure) spins waiting for them, both take tasks from one counter,
//! and the leader waits for the last one. While it waits the partner also runs rayon's own
//! pending work (`rayon::yield_now`), so a rayon loop inside the closure (candle's ops) still
//! gets both threads. A partner that waits longer than the serial work between loops takes (a
//! few hundred microseconds) parks until the next loop, so on a loaded machine it does not
//! hold a core the leader needs. Outside a team, [`for_each`] is rayon's parallel loop.
//!
//! Results never depend on which thread ran a task: every task writes its own outputs.
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
            let _leading = Leading::start(shared);
            work()
        })
    }
}

/// This thread leads a team from [`Leading::start`] until the value drops, also when the
/// work panics: the drop releases the partner, for which the scope around the work waits
/// before it lets the panic go on (else a panic would hang the caller instead).
struct Leading<'a> {
    shared: &'a Shared,
    before: Option<*const Shared>,
}

impl<'a> Leading<'a> {
    fn start(shared: &'a Shared) -> Self {
        let before = LEADING.with(|l| l.replace(Some(shared as *const Shared)));
        Self { shared, before }
    }
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        LEADING.with(|l| l.set(self.before));
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake();
    }
}

/// Runs `task(0..tasks)`, each index once, on the team this thread leads, else on rayon's
/// pool; returns when all are done.
pub fn for_each(tasks: usize, task: impl Fn(usize) + Sync) {
    if tasks <= 1 {
        // Nothing to share: no hand-off, no cursor traffic.
        (0..tasks).for_each(task);
        return;
    }
    match LEADING.with(|l| l.get()) {
        // SAFETY: `LEADING` holds the team only while `Team::run`'s frame, which owns it, runs
        // the work on this thread.
        Some(shared) => unsafe { &*shared }.lead(tasks, &task),
        None => (0..tasks).into_par_iter().for_each(&task),
    }
}

/// Runs `f(i, chunk)` for every `size`-value chunk of `data` (the last may be shorter), as
/// [`for_each`] runs tasks.
pub fn for_each_chunk_mut<T: Send>(
    data: &mut [T],
    size: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    assert!(size > 0, "chunks of at least one value");
    let len = data.len();
    let base = SharedSlice(data.as_mut_ptr());
    for_each(len.div_ceil(size), |i| {
        let start = i * size;
        // SAFETY: `for_each` runs each index once, so the chunks of the tasks are disjoint
        // parts of `data`, which this call borrows mutably until every task is done.
        let chunk =
            unsafe { std::slice::from_raw_parts_mut(base.at(start), size.min(len - start)) };
        f(i, chunk)
    });
}

/// `f(0..tasks)` collected in order, the calls made as [`for_each`] runs tasks.
pub fn map<R: Send>(tasks: usize, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
    let mut out: Vec<Option<R>> = (0..tasks).map(|_| None).collect();
    for_each_chunk_mut(&mut out, 1, |i, slot| slot[0] = Some(f(i)));
    (out.into_iter())
        .map(|r| r.expect("for_each runs every task"))
        .collect()
}

/// The start of a slice whose disjoint parts tasks on several threads write.
struct SharedSlice<T>(*mut T);

// SAFETY: only `for_each_chunk_mut` makes one, and hands each task its own part of the slice;
// sending those parts needs `T: Send`.
unsafe impl<T: Send> Sync for SharedSlice<T> {}

impl<T> SharedSlice<T> {
    /// The pointer `offset` values in (a method, so closures capture the whole `Sync` value
    /// and not its raw pointer field).
    ///
    /// # Safety
    ///
    /// `offset` must lie within the slice (or at its end).
    unsafe fn at(&self, offset: usize) -> *mut T {
        // SAFETY: the caller keeps `offset` within the slice.
        unsafe { self.0.add(offset) }
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
                if let Some(rayon::Yield::Executed) = rayon::yield_now() {
                    // A job of a rayon loop inside the team's closure: keep helping.
                    spins = 0;
                } else if spins < SPINS {
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

    /// A rayon pool of `threads` threads of its own.
    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool")
    }

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
        let pool = pool(1);
        pool.install(|| Team::run(check));
    }

    /// Chunks cover the slice once each, the last one short; `map` keeps the order.
    #[test]
    fn chunks_and_maps_cover_every_index_in_order() {
        let check = || {
            for (len, size) in [(0, 3), (1, 3), (10, 3), (12, 4), (1000, 7)] {
                let mut data = vec![usize::MAX; len];
                for_each_chunk_mut(&mut data, size, |i, chunk| {
                    assert!(chunk.len() == size || (i + 1) * size > len);
                    for (j, v) in chunk.iter_mut().enumerate() {
                        *v = i * size + j;
                    }
                });
                assert_eq!(data, (0..len).collect::<Vec<_>>());
                assert_eq!(
                    map(len, |i| i * 2),
                    (0..len).map(|i| i * 2).collect::<Vec<_>>()
                );
            }
        };
        check();
        let pool = pool(2);
        pool.install(|| Team::run(check));
    }

    /// A rayon loop inside a team still gets the second thread: the partner runs rayon's
    /// pending jobs while it waits. Two halves of a `join` that each wait for the other meet
    /// only when both run at once (each gives up after a few seconds, so a regression fails
    /// instead of hanging).
    #[test]
    fn the_partner_runs_rayon_jobs_while_it_waits() {
        let pool = pool(2);
        let met = pool.install(|| {
            Team::run(|| {
                let here = [AtomicBool::new(false), AtomicBool::new(false)];
                let meet = |me: usize| {
                    here[me].store(true, Ordering::SeqCst);
                    let start = std::time::Instant::now();
                    while !here[1 - me].load(Ordering::SeqCst) {
                        if start.elapsed() > std::time::Duration::from_secs(5) {
                            return false;
                        }
                        std::hint::spin_loop();
                    }
                    true
                };
                rayon::join(|| meet(0), || meet(1))
            })
        });
        assert_eq!(met, (true, true));
    }

    /// A panic in the team's work reaches the caller (the partner is released, not waited
    /// for forever); checked on a thread of its own so that a regression fails, not hangs.
    #[test]
    fn a_panic_in_the_work_reaches_the_caller() {
        let (sent, received) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let pool = pool(2);
            let caught = pool.install(|| {
                std::panic::catch_unwind(|| {
                    Team::run(|| {
                        for_each(4, |_| {});
                        panic!("the work fails")
                    })
                })
            });
            let _ = sent.send(caught.is_err());
        });
        let panicked = received.recv_timeout(std::time::Duration::from_secs(20));
        assert_eq!(panicked, Ok(true), "Team::run hung or swallowed the panic");
    }

    /// Work done on the partner is visible to the leader when the loop returns.
    #[test]
    fn results_are_visible_after_the_loop() {
        let pool = pool(2);
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
