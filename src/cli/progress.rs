//! Progress for people, on a terminal: an overall bar (files done of all queued, bytes, rate,
//! ETA) and a line for each active large transfer (at most [`MAX_LINES`]). Nothing is drawn
//! when hidden (stderr no terminal, `-q`, JSON logs on stderr); log lines on stderr are
//! printed above the bars (see `cli::logging`). No colours when `NO_COLOR` is set.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::logging;
use claudedl::engine::{Reporter, TransferError, TransferReport};

/// Transfers at least this large get a line of their own.
const LARGE: u64 = 8 * 1024 * 1024;
/// At most this many per-transfer lines at once.
const MAX_LINES: usize = 8;
const TICK: Duration = Duration::from_millis(200);

/// Draws bars on stderr when visible; otherwise stays silent.
pub struct Bars {
    multi: MultiProgress,
    state: Mutex<State>,
    names: Vec<String>,
    visible: bool,
    colours: bool,
}

#[derive(Default)]
struct State {
    counts: Overall,
    overall: Option<ProgressBar>,
    /// Lines of active large transfers by transfer id, with their labels.
    lines: HashMap<usize, (String, ProgressBar)>,
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
        let multi = MultiProgress::with_draw_target(target);
        if visible {
            logging::route_through(Some(multi.clone()));
        }
        Bars {
            multi,
            state: Mutex::default(),
            names,
            visible,
            colours: logging::colours_allowed(),
        }
    }

    /// Print a line on stderr above the bars (nothing when hidden: the line is not even made).
    pub fn println(&self, line: impl FnOnce() -> String) {
        if self.visible {
            let line = line();
            self.multi.suspend(|| eprintln!("{line}"));
        }
    }

    fn label(&self, id: usize, url: &str) -> String {
        let from_url = || url.rsplit('/').next().unwrap_or(url).to_owned();
        self.names.get(id).cloned().unwrap_or_else(from_url)
    }

    fn name(&self, id: usize) -> String {
        let state = self.state.lock().unwrap();
        let active = state.lines.get(&id).map(|(name, _)| name.clone());
        active
            .or_else(|| self.names.get(id).cloned())
            .unwrap_or_default()
    }

    /// Bring the overall bar up to date, creating it, or clearing it once all is done.
    fn redraw(&self, state: &mut State) {
        let counts = &state.counts;
        if counts.all_done() {
            if let Some(bar) = state.overall.take() {
                bar.finish_and_clear();
            }
            return;
        }
        let bar = state.overall.get_or_insert_with(|| {
            let bar = self.multi.insert(0, ProgressBar::new(0));
            bar.set_style(self.style(OVERALL));
            bar.enable_steady_tick(TICK);
            bar
        });
        bar.set_length(counts.bytes_total.max(counts.bytes_done));
        bar.set_position(counts.bytes_done);
        bar.set_message(counts.files_line());
    }

    fn style(&self, template: &str) -> ProgressStyle {
        let bar = if self.colours {
            "{bar:30.cyan/blue}"
        } else {
            "{bar:30}"
        };
        ProgressStyle::with_template(&template.replace("{bar}", bar))
            .expect("the template is valid")
            .progress_chars("=> ")
    }

    fn with_state(&self, f: impl FnOnce(&mut State)) {
        if self.visible {
            let mut state = self.state.lock().unwrap();
            f(&mut state);
            self.redraw(&mut state);
        }
    }
}

const OVERALL: &str =
    "{msg:>18} [{bar}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} ETA {eta:>4}";
const LINE: &str =
    "{msg:>18!} [{bar}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} ETA {eta:>4}";

impl Reporter for Bars {
    fn queued(&self, files: usize, bytes: Option<u64>) {
        self.with_state(|state| state.counts.queued(files as u64, bytes));
    }

    fn started(&self, id: usize, url: &str, total: Option<u64>, already: u64) {
        self.with_state(|state| {
            state.counts.started(id, total, already);
            let large = total.is_some_and(|t| t >= LARGE);
            let restarted = state.lines.remove(&id);
            if let Some((_, old)) = restarted {
                old.finish_and_clear();
            }
            if !large || state.lines.len() >= MAX_LINES {
                return;
            }
            let bar = self.multi.add(ProgressBar::new(total.unwrap_or(0)));
            bar.set_style(self.style(LINE));
            bar.set_position(already);
            bar.reset_eta();
            let name = self.label(id, url);
            bar.set_message(name.clone());
            bar.enable_steady_tick(TICK);
            state.lines.insert(id, (name, bar));
        });
    }

    fn progress(&self, id: usize, bytes: u64) {
        if !self.visible {
            return;
        }
        // The hot path: positions only, no redraw of the file count.
        let mut state = self.state.lock().unwrap();
        state.counts.progress(id, bytes);
        if let Some(bar) = &state.overall {
            bar.set_position(state.counts.bytes_done);
        }
        if let Some((_, bar)) = state.lines.get(&id) {
            bar.inc(bytes);
        }
    }

    fn connections(&self, id: usize, live: usize) {
        self.with_state(|state| {
            if let Some((name, bar)) = state.lines.get(&id) {
                bar.set_message(format!("{name} ×{live}"));
            }
        });
    }

    fn notice(&self, id: usize, message: &str) {
        self.println(|| format!("{}: {message}", self.name(id)));
    }

    fn retrying(&self, id: usize, failures: u32, delay: Duration, reason: &str) {
        self.println(|| {
            format!(
                "{}: retry {failures} in {delay:.1?}: {reason}",
                self.name(id)
            )
        });
    }

    fn finished(&self, id: usize, result: &Result<TransferReport, TransferError>) {
        self.with_state(|state| {
            let size = result.as_ref().ok().map(|report| report.size);
            state.counts.finished(id, size);
            if let Some((_, bar)) = state.lines.remove(&id) {
                bar.finish_and_clear();
            }
        });
    }
}

/// The overall bar's numbers. Sizes come from [`Reporter::queued`] when every queued size is
/// known, else from each transfer's start; failed transfers leave the byte total.
#[derive(Debug, Default)]
pub struct Overall {
    pub files_total: u64,
    pub files_done: u64,
    pub files_failed: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// Queued files whose size is already in `bytes_total` and which have not started.
    presized: u64,
    /// Active transfers: their total and bytes done.
    active: HashMap<usize, (Option<u64>, u64)>,
}

impl Overall {
    pub fn queued(&mut self, files: u64, bytes: Option<u64>) {
        self.files_total += files;
        if let Some(bytes) = bytes {
            self.bytes_total += bytes;
            self.presized += files;
        }
    }

    pub fn started(&mut self, id: usize, total: Option<u64>, already: u64) {
        if let Some((_, done)) = self.active.insert(id, (total, already)) {
            // Started over: its earlier bytes no longer count.
            self.bytes_done = self.bytes_done - done + already;
            return;
        }
        if self.presized > 0 {
            self.presized -= 1;
        } else {
            self.bytes_total += total.unwrap_or(0);
        }
        let seen = self.files_done + self.files_failed + self.active.len() as u64;
        self.files_total = self.files_total.max(seen);
        self.bytes_done += already;
    }

    pub fn progress(&mut self, id: usize, bytes: u64) {
        if let Some((_, done)) = self.active.get_mut(&id) {
            *done += bytes;
            self.bytes_done += bytes;
        }
    }

    /// `size`: the file's size when it finished well, `None` when it failed.
    pub fn finished(&mut self, id: usize, size: Option<u64>) {
        let active = self.active.remove(&id);
        let never_started = active.is_none() && self.presized > 0;
        if never_started {
            self.presized -= 1;
        }
        match (size, active) {
            (Some(_), Some(_)) => self.files_done += 1,
            (Some(size), None) => {
                self.files_done += 1;
                // Left alone (already present): its queued size counts as done.
                if never_started {
                    self.bytes_done += size;
                } else {
                    self.bytes_total += size;
                    self.bytes_done += size;
                }
            }
            (None, active) => {
                self.files_failed += 1;
                if let Some((Some(total), done)) = active {
                    self.bytes_total -= total.saturating_sub(done).min(self.bytes_total);
                }
            }
        }
        self.files_total = self.files_total.max(self.files_done + self.files_failed);
    }

    /// Nothing queued is left to do.
    pub fn all_done(&self) -> bool {
        self.active.is_empty() && self.files_done + self.files_failed >= self.files_total
    }

    /// `3/10 files` (and `, 1 failed`).
    pub fn files_line(&self) -> String {
        let done = self.files_done + self.files_failed;
        match self.files_failed {
            0 => format!("{done}/{} files", self.files_total),
            failed => format!("{done}/{} files, {failed} failed", self.files_total),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_sizes_are_counted_once_and_failures_leave_the_total() {
        let mut o = Overall::default();
        o.queued(3, Some(300));
        o.started(0, Some(100), 0);
        o.started(1, Some(100), 40);
        assert_eq!((o.bytes_done, o.bytes_total), (40, 300));
        o.progress(0, 100);
        o.finished(0, Some(100));
        o.progress(1, 10);
        o.finished(1, None);
        assert_eq!((o.bytes_done, o.bytes_total), (150, 250));
        assert_eq!(o.files_line(), "2/3 files, 1 failed");
        assert!(!o.all_done());
        o.finished(2, Some(100));
        assert_eq!((o.bytes_done, o.bytes_total), (250, 250));
        assert!(o.all_done());
    }

    #[test]
    fn unknown_sizes_are_learnt_at_the_start_and_restarts_reset_bytes() {
        let mut o = Overall::default();
        o.queued(2, None);
        o.started(0, Some(50), 0);
        o.progress(0, 30);
        o.started(0, Some(50), 0);
        assert_eq!((o.bytes_done, o.bytes_total), (0, 50));
        o.progress(0, 50);
        o.finished(0, Some(50));
        o.started(1, None, 0);
        o.progress(1, 7);
        o.finished(1, Some(7));
        assert_eq!((o.bytes_done, o.files_done), (57, 2));
        assert!(o.all_done());
    }

    #[test]
    fn transfers_without_a_queue_count_themselves() {
        let mut o = Overall::default();
        o.started(0, Some(10), 0);
        assert_eq!(o.files_line(), "0/1 files");
        o.progress(0, 10);
        o.finished(0, Some(10));
        assert_eq!(o.files_line(), "1/1 files");
        o.finished(5, Some(4));
        assert_eq!((o.files_total, o.bytes_total, o.bytes_done), (2, 14, 14));
    }
}
