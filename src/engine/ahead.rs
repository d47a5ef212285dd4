//! Unnamed files (`O_TMPFILE`) made ahead of need in the directory small files are written
//! into, so that a transfer rarely creates one on the runtime's thread: creating a file waits,
//! for milliseconds, whenever the journal is writing out the metadata of the group committed
//! before (`do_get_write_access` on the inode bitmap), and a runtime thread that waits stalls
//! every download it runs. A blocking thread makes up to [`AHEAD`] files once fewer than half
//! are left: one hop to another thread for dozens of files, where writing each body on another
//! thread cost more than the waits it hid (docs/benchmarks-small.md, session 6).
//!
//! The files follow the directory asked for, once it has been asked for [`SETTLED`] times in a
//! row (a list mostly goes into one directory, a sync into one month at a time; files spread
//! over many directories, or a single download, get none made for them). A file never taken
//! is closed without a name, and the file system reclaims it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustix::fs::{CWD, Mode, OFlags};

/// Unnamed files kept ready, at most (each an open file descriptor).
pub const AHEAD: usize = 128;
/// Asks in a row for another directory after which the files are made there instead.
const SETTLED: usize = 16;

/// The files made ahead for one directory.
#[derive(Debug, Default)]
pub struct Ahead {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    dir: PathBuf,
    files: Vec<File>,
    /// Another directory asked for, and how many times in a row.
    next: Option<(PathBuf, usize)>,
    /// The blocking task making more, once started.
    making: Option<tokio::task::JoinHandle<()>>,
    /// The directory refused a file (no unnamed files there, a full disk): none is made for it
    /// again, and each transfer creates its own (and reports what is wrong).
    refused: bool,
}

impl State {
    fn is_making(&self) -> bool {
        self.making.as_ref().is_some_and(|task| !task.is_finished())
    }
}

/// A new unnamed file in `dir`, writable, with the mode a new file would have.
pub fn open_unnamed(dir: &Path) -> rustix::io::Result<File> {
    let flags = OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC;
    rustix::fs::openat(CWD, dir, flags, Mode::from(0o666)).map(File::from)
}

impl Ahead {
    /// An unnamed file of `dir` made ahead, if one is ready. Starts making more when fewer than
    /// half are left (within a tokio runtime; outside one, never), for `dir` from now on.
    pub fn take(self: &Arc<Self>, dir: &Path) -> Option<File> {
        let mut state = self.state.lock().unwrap();
        if state.dir != dir {
            let asked = match state.next.take() {
                Some((next, asked)) if next == dir => asked + 1,
                _ => 1,
            };
            // The pool moves once the files of the last directory are made.
            if asked < SETTLED || state.is_making() {
                state.next = Some((dir.to_path_buf(), asked));
                return None;
            }
            state.dir = dir.to_path_buf();
            state.refused = false;
            let others = std::mem::take(&mut state.files);
            self.make_more(&mut state, others);
            return None;
        }
        state.next = None;
        let file = state.files.pop();
        if state.files.len() < AHEAD / 2 && !state.is_making() && !state.refused {
            self.make_more(&mut state, Vec::new());
        }
        file
    }

    /// Wait until the files being made are ready (tests).
    #[cfg(test)]
    pub async fn made(&self) {
        let making = self.state.lock().unwrap().making.take();
        if let Some(task) = making {
            task.await.unwrap();
        }
    }

    /// Whether more files are being made (tests: after [`Ahead::made`], whether a take since
    /// started making).
    #[cfg(test)]
    pub fn making(&self) -> bool {
        self.state.lock().unwrap().making.is_some()
    }

    #[cfg(test)]
    pub fn ready(&self) -> usize {
        self.state.lock().unwrap().files.len()
    }

    /// Make files up to [`AHEAD`] for the state's directory on a blocking thread, closing
    /// `others` (files of the directory before) there too.
    fn make_more(self: &Arc<Self>, state: &mut State, others: Vec<File>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (ahead, dir) = (Arc::clone(self), state.dir.clone());
        let wanted = AHEAD - state.files.len();
        state.making = Some(runtime.spawn_blocking(move || {
            drop(others);
            let made: Vec<File> = (0..wanted).map_while(|_| open_unnamed(&dir).ok()).collect();
            let mut state = ahead.state.lock().unwrap();
            if state.dir == dir {
                state.refused |= made.len() < wanted;
                let room = AHEAD.saturating_sub(state.files.len());
                state.files.extend(made.into_iter().take(room));
            }
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ask for `dir` until files are being made for it: `SETTLED` times.
    fn settle(ahead: &Arc<Ahead>, dir: &Path) {
        for _ in 0..SETTLED {
            assert!(ahead.take(dir).is_none(), "nothing is ready before");
        }
    }

    #[tokio::test]
    async fn files_are_made_for_the_directory_asked_for_and_follow_it() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let ahead = Arc::new(Ahead::default());
        for _ in 0..SETTLED - 1 {
            assert!(ahead.take(a.path()).is_none());
        }
        ahead.made().await;
        assert_eq!(ahead.ready(), 0, "not settled yet: nothing made");
        settle(&ahead, a.path());
        ahead.made().await;
        assert_eq!(ahead.ready(), AHEAD);
        for _ in 0..AHEAD / 2 {
            assert!(ahead.take(a.path()).is_some());
        }
        ahead.made().await;
        assert_eq!(ahead.ready(), AHEAD / 2, "half left: none made yet");
        assert!(ahead.take(a.path()).is_some());
        ahead.made().await;
        assert_eq!(
            ahead.ready(),
            AHEAD,
            "made up again once fewer than half were left"
        );

        settle(&ahead, b.path());
        ahead.made().await;
        let mut file = ahead.take(b.path()).expect("made for the new directory");
        std::io::Write::write_all(&mut file, b"x").unwrap();
        let named = b.path().join("named");
        super::super::commit::link(&file, &named).unwrap();
        assert_eq!(std::fs::read(&named).unwrap(), b"x");
    }

    #[tokio::test]
    async fn directories_taking_turns_move_nothing() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let ahead = Arc::new(Ahead::default());
        settle(&ahead, a.path());
        ahead.made().await;
        for _ in 0..SETTLED * 2 {
            assert!(ahead.take(b.path()).is_none(), "b never settles");
            assert!(ahead.take(a.path()).is_some(), "a keeps its files");
        }
        ahead.made().await;
        assert_eq!(
            ahead.ready(),
            AHEAD - SETTLED * 2,
            "none dropped, none made for b"
        );
    }

    #[tokio::test]
    async fn a_directory_that_refuses_a_file_gets_none_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        let ahead = Arc::new(Ahead::default());
        settle(&ahead, &gone);
        ahead.made().await;
        assert_eq!(ahead.ready(), 0);
        for _ in 0..SETTLED {
            assert!(ahead.take(&gone).is_none());
        }
        assert!(!ahead.making(), "no making started after the refusal");

        settle(&ahead, dir.path());
        ahead.made().await;
        assert_eq!(ahead.ready(), AHEAD, "another directory starts afresh");
    }

    #[test]
    fn outside_a_runtime_nothing_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let ahead = Arc::new(Ahead::default());
        settle(&ahead, dir.path());
        assert!(ahead.take(dir.path()).is_none());
        assert_eq!(ahead.ready(), 0);
    }
}
