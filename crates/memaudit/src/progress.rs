//! Progress: an indicatif bar with rate and ETA on a terminal; plain periodic lines on stderr
//! otherwise (indicatif draws nothing when stderr is not a terminal, so CI logs would be silent).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    quiet: bool,
    label: String,
    total: u64,
    pos: u64,
    started: Instant,
    last_line: Instant,
    every: Duration,
}

impl Progress {
    pub fn new(label: &str, total: u64, quiet: bool) -> Self {
        let bar = if !quiet && std::io::stderr().is_terminal() {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template(
                    "{msg:>12} [{bar:30}] {pos}/{len} {per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.set_message(label.to_string());
            Some(b)
        } else {
            None
        };
        let now = Instant::now();
        Self {
            bar,
            quiet,
            label: label.to_string(),
            total,
            pos: 0,
            started: now,
            last_line: now,
            every: Duration::from_secs(10),
        }
    }

    /// Another unit count (a new stage of a multi-stage run: training steps, then shadow
    /// models): the length, rate and ETA start over, so they describe the stage in progress.
    pub fn set_total(&mut self, total: u64) {
        if total == self.total {
            return;
        }
        self.total = total;
        self.started = Instant::now();
        if let Some(b) = &self.bar {
            b.set_length(total);
            b.reset_eta();
        }
    }

    pub fn set(&mut self, pos: u64, note: &str) {
        self.pos = pos;
        if let Some(b) = &self.bar {
            b.set_position(pos);
            return;
        }
        if self.quiet || self.last_line.elapsed() < self.every {
            return;
        }
        self.last_line = Instant::now();
        let el = self.started.elapsed().as_secs_f64();
        let rate = pos as f64 / el.max(1e-9);
        let eta = if rate > 0.0 {
            (self.total.saturating_sub(pos)) as f64 / rate
        } else {
            f64::NAN
        };
        eprintln!(
            "{}: {pos}/{} ({rate:.1}/s, eta {eta:.0}s) {note}",
            self.label, self.total
        );
    }

    /// A line that must be seen (an epoch summary): printed above the bar, or on its own.
    pub fn line(&self, msg: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(b) => b.println(msg),
            None => eprintln!("{msg}"),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
