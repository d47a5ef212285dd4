//! Replace a file's content so that a crash leaves either the old or the new version whole;
//! open files without following symbolic links; clean the temporary files of dead processes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The suffix of [`write_atomic`]'s temporary files, followed by the writer's process id.
const TEMP_MARK: &str = ".tmp-";

/// Write `bytes` to a temporary file beside `path`, fsync it, rename it over `path` and fsync
/// the directory so the rename itself survives a crash.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, |out| out.write_all(bytes))
}

/// [`write_atomic`] of what `write` writes (through a buffer): content of any size.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut io::BufWriter<File>) -> io::Result<()>,
) -> io::Result<()> {
    let mut replacing = Replacements::default();
    replacing.stage_with(path, write)?;
    replacing.commit()
}

/// Files replaced together, each as [`write_atomic`] does: every new content written to a
/// temporary file beside its path first; then all of them fsynced, renamed over their paths,
/// and each directory fsynced once. Files in one directory wait for the disk once together,
/// not once each. Temporary files never renamed (an error, or dropped before
/// [`Replacements::commit`]) are removed.
#[derive(Debug, Default)]
pub struct Replacements {
    staged: Vec<Replacement>,
}

#[derive(Debug)]
struct Replacement {
    file: File,
    temp: PathBuf,
    path: PathBuf,
}

impl Replacements {
    /// Write the new content of `path`, what `write` writes (through a buffer), to its
    /// temporary file.
    pub fn stage_with(
        &mut self,
        path: &Path,
        write: impl FnOnce(&mut io::BufWriter<File>) -> io::Result<()>,
    ) -> io::Result<()> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let temp = parent_dir(path).join(format!(".{name}{TEMP_MARK}{}", std::process::id()));
        let written = (|| {
            let mut out = io::BufWriter::with_capacity(1 << 16, create_new_no_follow(&temp)?);
            write(&mut out)?;
            out.into_inner().map_err(io::IntoInnerError::into_error)
        })();
        match written {
            Ok(file) => {
                let path = path.to_path_buf();
                self.staged.push(Replacement { file, temp, path });
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_file(&temp);
                Err(e)
            }
        }
    }

    /// Take over what `other` staged, to be committed with this.
    pub fn absorb(&mut self, mut other: Replacements) {
        self.staged.append(&mut other.staged);
    }

    /// Make every staged content durable, rename each over its path, and make the renames
    /// durable.
    pub fn commit(mut self) -> io::Result<()> {
        for staged in &self.staged {
            staged.file.sync_all()?;
        }
        let mut dirs = std::collections::BTreeSet::new();
        for staged in &self.staged {
            fs::rename(&staged.temp, &staged.path)?;
            dirs.insert(parent_dir(&staged.path).to_path_buf());
        }
        self.staged.clear();
        dirs.iter().try_for_each(|dir| sync_dir(dir))
    }
}

impl Drop for Replacements {
    fn drop(&mut self) {
        for staged in &self.staged {
            // Renamed already (a later rename failed) or never written: nothing to remove.
            let _ = fs::remove_file(&staged.temp);
        }
    }
}

/// Create `path` anew for writing: a file left there by this process id before (a crash) is
/// replaced; a symbolic link is removed, never followed.
pub fn create_new_no_follow(path: &Path) -> io::Result<File> {
    let open = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(no_follow())
            .open(path)
    };
    match open() {
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(path)?;
            open()
        }
        other => other,
    }
}

/// `O_NOFOLLOW`: opening a symbolic link fails (`ELOOP`) instead of opening its target.
pub fn no_follow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// Whether an open error means the path is a symbolic link (opened with [`no_follow`]).
pub fn is_link_error(error: &io::Error) -> bool {
    error.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
}

/// Remove the temporary files [`write_atomic`] left in `dir` when the process that wrote them
/// died (`.NAME.tmp-PID`, PID not running; this process's own only when `own` is true, i.e. it
/// writes none at the moment). With `name`, only those of `NAME`. Returns the paths removed.
pub fn remove_stale_temps(dir: &Path, name: Option<&str>, own: bool) -> io::Result<Vec<PathBuf>> {
    remove_stale_matching(dir, own, |of| name.is_none_or(|name| name == of))
}

/// [`remove_stale_temps`] of those whose `NAME` is `wanted`.
pub fn remove_stale_marked(dir: &Path, wanted: impl Fn(&str) -> bool) -> io::Result<Vec<PathBuf>> {
    remove_stale_matching(dir, false, wanted)
}

fn remove_stale_matching(
    dir: &Path,
    own: bool,
    wanted: impl Fn(&str) -> bool,
) -> io::Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some((of, pid)) = temp_owner(&file_name) else {
            continue;
        };
        let mine = pid == std::process::id();
        if !wanted(of) || (mine && !own) || (!mine && is_running(pid)) {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Ok(()) => removed.push(entry.path()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    Ok(removed)
}

/// `.NAME.tmp-PID` → (`NAME`, PID).
fn temp_owner(file_name: &str) -> Option<(&str, u32)> {
    let rest = file_name.strip_prefix('.')?;
    let (name, pid) = rest.rsplit_once(TEMP_MARK)?;
    let pid = pid.parse().ok().filter(|&pid| pid > 0)?;
    Some((name, pid))
}

/// Whether a process with id `pid` exists (one we may not signal counts as running).
fn is_running(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    !matches!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    )
}

/// Rename `from` to `to` and make the rename durable.
pub fn rename_durable(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    sync_dir(parent_dir(to))
}

/// fsync a directory so that entries created or renamed in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(entries(dir.path()), 1);
    }

    /// How many names `dir` holds.
    fn entries(dir: &Path) -> usize {
        fs::read_dir(dir).unwrap().count()
    }

    /// `a.json` (holding "old a") and `b.json` (not there) in a new directory; the new content
    /// of `a.json` staged.
    fn a_replaced() -> (tempfile::TempDir, PathBuf, PathBuf, Replacements) {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.json"), dir.path().join("b.json"));
        fs::write(&a, b"old a").unwrap();
        let mut replacing = Replacements::default();
        replacing
            .stage_with(&a, |out| out.write_all(b"new a"))
            .unwrap();
        (dir, a, b, replacing)
    }

    #[test]
    fn replacements_change_nothing_until_committed_then_everything() {
        let (dir, a, b, mut replacing) = a_replaced();
        replacing
            .stage_with(&b, |out| out.write_all(b"new b"))
            .unwrap();
        assert_eq!(fs::read(&a).unwrap(), b"old a");
        assert!(!b.exists());
        replacing.commit().unwrap();
        assert_eq!(fs::read(&a).unwrap(), b"new a");
        assert_eq!(fs::read(&b).unwrap(), b"new b");
        assert_eq!(entries(dir.path()), 2, "no temporary left");
    }

    #[test]
    fn replacements_dropped_or_failed_leave_the_old_files_and_no_temporary() {
        let (dir, a, b, mut replacing) = a_replaced();
        let failed = replacing.stage_with(&b, |out| {
            out.write_all(b"half")?;
            Err(io::Error::other("the writer failed"))
        });
        assert_eq!(failed.unwrap_err().to_string(), "the writer failed");
        drop(replacing);
        assert_eq!(fs::read(&a).unwrap(), b"old a");
        assert_eq!(entries(dir.path()), 1, "no temporary left");
    }

    #[test]
    fn never_writes_through_a_link_at_the_temporary_name() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::write(&target, b"keep").unwrap();
        let path = dir.path().join("state.json");
        let temp = dir
            .path()
            .join(format!(".state.json.tmp-{}", std::process::id()));
        std::os::unix::fs::symlink(&target, &temp).unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"keep");
        assert_eq!(fs::read(&path).unwrap(), b"new");
    }

    #[test]
    fn removes_the_temporary_files_of_dead_processes_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let live = std::process::id();
        for name in [
            format!(".a.part.json.tmp-{dead}"),
            format!(".b.part.json.tmp-{dead}"),
            format!(".a.part.json.tmp-{live}"),
            "a.part".to_owned(),
            ".a.part.json.tmp-x".to_owned(),
        ] {
            fs::write(dir.path().join(name), b"").unwrap();
        }
        let removed = remove_stale_temps(dir.path(), Some("a.part.json"), false).unwrap();
        assert_eq!(
            removed,
            [dir.path().join(format!(".a.part.json.tmp-{dead}"))]
        );
        let removed = remove_stale_temps(dir.path(), None, true).unwrap();
        assert_eq!(removed.len(), 2, "{removed:?}");
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
    }
}
