//! The progress line on stderr: shown once a call has run for a second, only when stderr is a
//! terminal (never in pipes, files or CI logs), erased when the call ends. Drawn by indicatif,
//! which redraws the line in place from its own ticker thread while the call blocks.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a call runs before the line appears.
const SHOW_AFTER: Duration = Duration::from_secs(1);

/// A running progress line (hidden until [`SHOW_AFTER`]).
pub struct Progress {
    bar: ProgressBar,
    partials: u64,
    /// Dropped when the call ends: wakes the thread that would show the line.
    stop: Option<mpsc::Sender<()>>,
    shower: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts timing a call described by `what` (e.g. "GetImages").
    pub fn start(what: &str) -> Progress {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        let style = ProgressStyle::with_template("{spinner} {prefix}: {elapsed} elapsed{msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        bar.set_style(style);
        bar.set_prefix(what.to_string());
        let (stop, wait) = mpsc::channel::<()>();
        let shower = std::io::stderr().is_terminal().then(|| {
            let bar = bar.clone();
            std::thread::spawn(move || {
                if wait.recv_timeout(SHOW_AFTER) == Err(mpsc::RecvTimeoutError::Timeout) {
                    bar.set_draw_target(ProgressDrawTarget::stderr());
                    bar.enable_steady_tick(Duration::from_millis(200));
                }
            })
        });
        Progress {
            bar,
            partials: 0,
            stop: Some(stop),
            shower,
        }
    }

    /// Counts one partial image received.
    pub fn partial_image(&mut self) {
        self.partials += 1;
        self.bar.set_message(format!(
            ", {} partial image{} received",
            self.partials,
            if self.partials == 1 { "" } else { "s" }
        ));
    }

    /// Runs `f` (which prints to stderr) with the line erased meanwhile.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    /// Ends: the line is erased.
    pub fn finish(mut self) {
        drop(self.stop.take());
        if let Some(shower) = self.shower.take() {
            let _ = shower.join();
        }
        self.bar.finish_and_clear();
    }
}
