//! The terminal: whether output goes to one, and a progress line on stderr
//! that shows only there (piped output stays quiet).

use std::io::{IsTerminal, Write};
use std::time::Instant;

/// A progress line on stderr, redrawn in place; a no-op unless stderr is a
/// terminal.
pub(crate) struct Progress {
    on: bool,
    start: Instant,
    frame: usize,
}

const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

impl Progress {
    /// A progress line, shown if stderr is a terminal.
    pub(crate) fn new() -> Progress {
        Progress {
            on: std::io::stderr().is_terminal(),
            start: Instant::now(),
            frame: 0,
        }
    }

    /// Redraws the line with a spinner, the elapsed time and `what`.
    pub(crate) fn show(&mut self, what: &str) {
        if !self.on {
            return;
        }
        self.frame = (self.frame + 1) % SPINNER.len();
        let secs = self.start.elapsed().as_secs_f32();
        let mut err = std::io::stderr().lock();
        // \r and "erase to end of line": the line is rewritten in place.
        let _ = write!(err, "\r{} {what} ({secs:.1} s)\x1b[K", SPINNER[self.frame]);
        let _ = err.flush();
    }

    /// Erases the line.
    pub(crate) fn clear(&mut self) {
        if self.on {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
        }
    }
}

/// Whether stdout is a terminal.
pub(crate) fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// Whether stderr is a terminal: notes meant for a person go there only then.
pub(crate) fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}
