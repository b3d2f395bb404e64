//! How a command ended, and the exit code that says so: 0 all done, 1 some items failed (the
//! others were written), 2 fatal (nothing could be done: bad flags, a model that does not load).

/// How a command ended when it did not fail outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything processed.
    Done,
    /// Some items failed; the others were written.
    SomeFailed,
}

/// The exit code of an error that stopped the command.
pub const FATAL: u8 = 2;

impl Outcome {
    /// Done when nothing failed.
    pub fn of_failures(failed: usize) -> Outcome {
        match failed {
            0 => Outcome::Done,
            _ => Outcome::SomeFailed,
        }
    }

    /// The process exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Done => 0,
            Outcome::SomeFailed => 1,
        }
    }
}
