//! Progress of a long command: a line redrawn in place (with rate and ETA) when standard error
//! is a terminal, a plain log line every tenth of the way otherwise.

use std::io::{IsTerminal as _, Write as _};
use std::time::Instant;

pub struct Progress {
    what: &'static str,
    tty: bool,
    started: Instant,
    logged_tenth: usize,
}

impl Progress {
    pub fn new(what: &'static str) -> Progress {
        Progress {
            what,
            tty: std::io::stderr().is_terminal(),
            started: Instant::now(),
            logged_tenth: 0,
        }
    }

    /// `done` of `total` units (periods), `rows` so far.
    pub fn update(&mut self, done: usize, total: usize, rows: u64) {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = rows as f64 / secs;
        let eta = if done > 0 && total > done {
            let left = secs / done as f64 * (total - done) as f64;
            format!(", ETA {}", human(left))
        } else {
            String::new()
        };
        let line = format!(
            "{}: {done}/{total} periods, {rows} rows, {rate:.0} rows/s{eta}",
            self.what
        );
        if self.tty {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r\x1b[2K{line}");
            let _ = e.flush();
        } else {
            let tenth = done.saturating_mul(10) / total.max(1);
            if tenth > self.logged_tenth || done == total {
                self.logged_tenth = tenth.max(self.logged_tenth + 1);
                tracing::info!(
                    done,
                    total,
                    rows,
                    rows_per_s = rate.round(),
                    "{}",
                    self.what
                );
            }
        }
    }

    /// Ends the redrawn line.
    pub fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

fn human(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}
