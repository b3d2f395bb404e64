//! Progress and messages: indicatif bars on a terminal, plain log lines otherwise.
//!
//! Owner: batch shell issue (#2).

use std::sync::atomic::{AtomicU8, Ordering};

use crate::cli::GlobalArgs;

static LEVEL: AtomicU8 = AtomicU8::new(1);

/// Sets the verbosity from `--quiet` / `--verbose`.
pub fn init(global: &GlobalArgs) {
    let level = if global.quiet {
        0
    } else if global.verbose {
        2
    } else {
        1
    };
    LEVEL.store(level, Ordering::Relaxed);
}

/// Whether ordinary progress messages are shown (not `--quiet`).
pub fn is_verbose_enough(level: u8) -> bool {
    LEVEL.load(Ordering::Relaxed) >= level
}

/// Formats an error with its whole source chain: `outer: inner: root`.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
