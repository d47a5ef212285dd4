//! Progress for people: a bar per active transfer on a terminal, nothing otherwise.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::engine::{Reporter, TransferError, TransferReport};

/// Draws bars on stderr when it is a terminal; otherwise stays silent.
pub struct Bars {
    multi: MultiProgress,
    /// Active bars by transfer id, with their labels.
    bars: Mutex<HashMap<usize, (String, ProgressBar)>>,
    names: Vec<String>,
    visible: bool,
}

impl Bars {
    /// `names` labels transfers by id (others are named after their URL); `visible` false
    /// hides everything.
    pub fn new(names: Vec<String>, visible: bool) -> Bars {
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Bars {
            multi: MultiProgress::with_draw_target(target),
            bars: Mutex::default(),
            names,
            visible,
        }
    }

    /// Print a line above the bars (nothing when hidden).
    pub fn println(&self, line: &str) {
        if !self.visible {
            return;
        }
        // indicatif prints above bars only while some are drawn.
        if self.bars.lock().unwrap().is_empty() {
            eprintln!("{line}");
        } else {
            let _ = self.multi.println(line);
        }
    }

    fn label(&self, id: usize, url: &str) -> String {
        let from_url = || url.rsplit('/').next().unwrap_or(url).to_owned();
        self.names.get(id).cloned().unwrap_or_else(from_url)
    }

    fn name(&self, id: usize) -> String {
        let bars = self.bars.lock().unwrap();
        let active = bars.get(&id).map(|(name, _)| name.clone());
        active
            .or_else(|| self.names.get(id).cloned())
            .unwrap_or_default()
    }

    fn with_bar(&self, id: usize, f: impl FnOnce(&str, &ProgressBar)) {
        if let Some((name, bar)) = self.bars.lock().unwrap().get(&id) {
            f(name, bar);
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
    fn started(&self, id: usize, url: &str, total: Option<u64>, already: u64) {
        if !self.visible {
            return;
        }
        let bar = self.multi.add(ProgressBar::new(total.unwrap_or(0)));
        bar.set_style(style());
        bar.set_position(already);
        bar.reset_eta();
        let name = self.label(id, url);
        bar.set_message(name.clone());
        bar.enable_steady_tick(Duration::from_millis(200));
        if let Some((_, old)) = self.bars.lock().unwrap().insert(id, (name, bar)) {
            old.finish_and_clear();
        }
    }

    fn progress(&self, id: usize, bytes: u64) {
        self.with_bar(id, |_, bar| bar.inc(bytes));
    }

    fn connections(&self, id: usize, live: usize) {
        self.with_bar(id, |name, bar| bar.set_message(format!("{name} ×{live}")));
    }

    fn notice(&self, id: usize, message: &str) {
        self.println(&format!("{}: {message}", self.name(id)));
    }

    fn retrying(&self, id: usize, failures: u32, delay: Duration, reason: &str) {
        self.println(&format!(
            "{}: retry {failures} in {delay:.1?}: {reason}",
            self.name(id)
        ));
    }

    fn finished(&self, id: usize, _result: &Result<TransferReport, TransferError>) {
        if let Some((_, bar)) = self.bars.lock().unwrap().remove(&id) {
            bar.finish_and_clear();
        }
    }
}
