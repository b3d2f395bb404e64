//! stdout of the commands, with one policy for its errors: a closed stdout (the reader of a
//! pipe went away, as with `| head`) ends the output quietly, and the command ends with the
//! exit code of what it did; any other write error (a full disk behind a redirection) is fatal
//! and names stdout. Failures of single items are never written here: they are reported on
//! stderr and the command goes on with the next item.

use std::io::{ErrorKind, StdoutLock, Write};

use crate::{Error, Result};

pub struct Stdout {
    out: StdoutLock<'static>,
    closed: bool,
}

impl Stdout {
    pub fn lock() -> Self {
        Stdout {
            out: std::io::stdout().lock(),
            closed: false,
        }
    }

    /// Writes `text` and flushes it, so outputs appear as they are made. Nothing is written
    /// once stdout is closed.
    pub fn write(&mut self, text: &str) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        let written = self
            .out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.flush());
        match written {
            Err(err) if err.kind() == ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            other => other.map_err(|err| Error::io("<stdout>", err)),
        }
    }

    /// `text` and a newline.
    pub fn line(&mut self, text: &str) -> Result<()> {
        self.write(&format!("{text}\n"))
    }

    /// Whether stdout was closed: the command stops making output nobody reads.
    pub fn closed(&self) -> bool {
        self.closed
    }
}
