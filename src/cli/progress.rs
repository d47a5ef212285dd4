//! Progress for people: a bar per active file on a terminal, nothing otherwise.

use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::engine::{Reporter, TransferError, TransferReport};

/// Draws bars on stderr when it is a terminal; otherwise stays silent.
pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<Vec<Option<ProgressBar>>>,
    names: Vec<String>,
    visible: bool,
}

impl Bars {
    /// `names` labels each transfer by id; `visible` false hides everything.
    pub fn new(names: Vec<String>, visible: bool) -> Bars {
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bars = Mutex::new(vec![None; names.len()]);
        Bars {
            multi: MultiProgress::with_draw_target(target),
            bars,
            names,
            visible,
        }
    }

    /// Print a line above the bars (or plainly when there are none).
    pub fn println(&self, line: &str) {
        if self.visible {
            let _ = self.multi.println(line);
        }
    }

    fn with_bar(&self, id: usize, f: impl FnOnce(&ProgressBar)) {
        if let Some(Some(bar)) = self.bars.lock().unwrap().get(id) {
            f(bar);
        }
    }
}

fn style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{msg:30!} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} ETA {eta:>4}",
    )
    .expect("the template is valid")
    .progress_chars("=> ")
}

impl Reporter for Bars {
    fn started(&self, id: usize, _url: &str, total: Option<u64>, already: u64) {
        if !self.visible {
            return;
        }
        let bar = self.multi.add(ProgressBar::new(total.unwrap_or(0)));
        bar.set_style(style());
        bar.set_position(already);
        bar.reset_eta();
        bar.set_message(self.names[id].clone());
        bar.enable_steady_tick(Duration::from_millis(200));
        if let Some(old) = self.bars.lock().unwrap()[id].replace(bar) {
            old.finish_and_clear();
        }
    }

    fn progress(&self, id: usize, bytes: u64) {
        self.with_bar(id, |bar| bar.inc(bytes));
    }

    fn connections(&self, id: usize, live: usize) {
        self.with_bar(id, |bar| {
            bar.set_message(format!("{} ×{live}", self.names[id]))
        });
    }

    fn notice(&self, id: usize, message: &str) {
        self.println(&format!("{}: {message}", self.names[id]));
    }

    fn retrying(&self, id: usize, failures: u32, delay: Duration, reason: &str) {
        self.println(&format!(
            "{}: retry {failures} in {delay:.1?}: {reason}",
            self.names[id]
        ));
    }

    fn finished(&self, id: usize, _result: &Result<TransferReport, TransferError>) {
        if let Some(bar) = self.bars.lock().unwrap()[id].take() {
            bar.finish_and_clear();
        }
    }
}
