//! Progress: a bar with rate and ETA on a terminal, structured log lines
//! everywhere else. Library code reports through this and never prints.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One snapshot of the move.
#[derive(Clone, Copy, Debug, Default)]
pub struct MoveProgress {
    pub pages_done: u64,
    pub pages_total: u64,
    pub rows_moved: u64,
    pub rows_per_sec: f64,
    pub sweep: u32,
}

pub trait Reporter: Send + Sync {
    fn phase(&self, name: &str, detail: &str);
    fn progress(&self, p: MoveProgress);
    fn done(&self, message: &str);
}

/// Picks the bar on a terminal, logs otherwise.
pub fn reporter(quiet: bool) -> Box<dyn Reporter> {
    if uses_bar(quiet) {
        Box::new(Bar::new())
    } else {
        Box::new(Log::default())
    }
}

/// Whether progress goes to a bar (a terminal, not silenced).
pub fn uses_bar(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}

pub struct Bar {
    bar: ProgressBar,
    moving: std::sync::atomic::AtomicBool,
    /// In a fleet run: the target's name and the board its bar is on.
    fleet: Option<(String, MultiProgress)>,
}

impl Bar {
    fn new() -> Self {
        // Hidden until a phase starts, so commands that report nothing
        // draw nothing.
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
        Bar {
            bar,
            moving: std::sync::atomic::AtomicBool::new(false),
            fleet: None,
        }
    }

    fn label(&self, phase: &str) -> String {
        match &self.fleet {
            Some((name, _)) => format!("{name} {phase}"),
            None => phase.to_string(),
        }
    }

    fn spinner_style() -> ProgressStyle {
        ProgressStyle::with_template("{spinner} {prefix:>7}  {msg}  {elapsed}").expect("valid template")
    }

    fn bar_style() -> ProgressStyle {
        ProgressStyle::with_template(
            "{spinner} {prefix:>7} [{bar:30}] {percent:>3}%  {msg}  elapsed {elapsed}, eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> ")
    }
}

impl Reporter for Bar {
    fn phase(&self, name: &str, detail: &str) {
        if self.bar.is_hidden() && self.fleet.is_none() {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
            self.bar.enable_steady_tick(Duration::from_millis(120));
        }
        self.moving.store(false, std::sync::atomic::Ordering::Relaxed);
        self.bar.set_style(Self::spinner_style());
        self.bar.set_prefix(self.label(name));
        self.bar.set_message(detail.to_string());
        self.bar.println(format!("{}: {detail}", self.label(name)));
    }

    fn progress(&self, p: MoveProgress) {
        if !self.moving.swap(true, std::sync::atomic::Ordering::Relaxed) {
            self.bar.set_style(Self::bar_style());
            self.bar.reset_eta();
        }
        self.bar.set_length(p.pages_total.max(1));
        self.bar.set_position(p.pages_done.min(p.pages_total));
        let sweep = if p.sweep > 0 {
            format!(", sweep {}", p.sweep)
        } else {
            String::new()
        };
        self.bar.set_message(format!(
            "{} rows moved, {:.0} rows/s{sweep}",
            p.rows_moved, p.rows_per_sec
        ));
    }

    fn done(&self, message: &str) {
        self.bar.finish_and_clear();
        match &self.fleet {
            Some((name, board)) => {
                let _ = board.println(format!("{name}: {message}"));
            }
            None => eprintln!("{message}"),
        }
    }
}

/// A fleet run's progress: on a terminal one bar per running target, each
/// labelled with the target's name; otherwise log lines, which the run
/// tags with the target's name (a tracing span).
pub struct Board {
    multi: Option<MultiProgress>,
}

impl Board {
    pub fn new(quiet: bool) -> Board {
        Board {
            multi: uses_bar(quiet).then(MultiProgress::new),
        }
    }

    /// The reporter of one target; its bar shows from now until it is done.
    pub fn reporter(&self, target: &str) -> Box<dyn Reporter> {
        match &self.multi {
            Some(multi) => {
                let bar = multi.add(ProgressBar::new(0));
                bar.set_style(Bar::spinner_style());
                bar.set_prefix(format!("{target} starting"));
                bar.enable_steady_tick(Duration::from_millis(120));
                Box::new(Bar {
                    bar,
                    moving: std::sync::atomic::AtomicBool::new(false),
                    fleet: Some((target.to_string(), multi.clone())),
                })
            }
            None => Box::new(Log::default()),
        }
    }
}

#[derive(Default)]
pub struct Log {
    last: Mutex<Option<Instant>>,
}

impl Reporter for Log {
    fn phase(&self, name: &str, detail: &str) {
        tracing::info!(phase = name, "{detail}");
    }

    fn progress(&self, p: MoveProgress) {
        let mut last = self.last.lock().expect("progress lock");
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(5)) {
            return;
        }
        *last = Some(Instant::now());
        tracing::info!(
            pages_done = p.pages_done,
            pages_total = p.pages_total,
            rows_moved = p.rows_moved,
            rows_per_sec = p.rows_per_sec as u64,
            sweep = p.sweep,
            "moving rows"
        );
    }

    fn done(&self, message: &str) {
        tracing::info!("{message}");
    }
}
