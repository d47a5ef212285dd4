//! The `.part` file: preallocated to the final size and written in place at each range's
//! offset, so parallel ranges need neither per-range files nor a merge step.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::atomic::no_follow;

/// A shared handle to the `.part` file; cheap to clone, safe to write from many tasks.
#[derive(Debug, Clone)]
pub struct PartFile {
    file: Arc<File>,
    path: PathBuf,
}

impl PartFile {
    /// Open `path` keeping what it holds (for resume), sized to `len` when the size is known.
    /// A symbolic link at `path` is refused (`ELOOP`), never written through.
    pub fn open(path: &Path, len: Option<u64>) -> io::Result<PartFile> {
        let file = open_regular(path)?;
        if let Some(len) = len {
            if file.metadata()?.len() != len {
                file.set_len(len)?;
            }
            preallocate(&file, len)?;
        }
        Ok(PartFile {
            file: Arc::new(file),
            path: path.to_path_buf(),
        })
    }

    /// Open `path` empty, discarding anything it held.
    pub fn create_empty(path: &Path, len: Option<u64>) -> io::Result<PartFile> {
        open_regular(path)?.set_len(0)?;
        PartFile::open(path, len)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write all of `bytes` at `offset` (blocking; call from a blocking context).
    pub fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(bytes, offset)
    }

    /// Fill `buf` from `offset` (blocking).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    /// Make written data durable (blocking).
    pub fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// Open (creating) `path` for reading and writing without following a symbolic link, and
/// only if it is a regular file.
fn open_regular(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(no_follow())
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(file)
}

/// An exclusive advisory lock (`flock`) on a download's `.part`, held for the whole transfer
/// so that two processes never write one `.part`. Released when dropped or the process dies.
#[derive(Debug)]
pub struct PartLock {
    file: File,
}

/// Why a `.part` could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum PartLockError {
    #[error("another process holds the lock")]
    Held,
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl PartLock {
    /// Lock `path` (created empty if absent) without waiting. A lock taken on a `.part` that was
    /// meanwhile removed or renamed (its holder finished) is taken again on the new file.
    pub fn acquire(path: &Path) -> Result<PartLock, PartLockError> {
        use rustix::fs::{FlockOperation, flock};
        for _ in 0..3 {
            let file = open_regular(path)?;
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(rustix::io::Errno::WOULDBLOCK) => return Err(PartLockError::Held),
                Err(errno) => return Err(PartLockError::Io(errno.into())),
            }
            let held = file.metadata()?;
            let now = std::fs::symlink_metadata(path);
            if now.is_ok_and(|now| now.dev() == held.dev() && now.ino() == held.ino()) {
                return Ok(PartLock { file });
            }
        }
        Err(PartLockError::Held)
    }

    /// Empty the locked `.part` (the file stays, and the lock with it).
    pub fn truncate(&self) -> io::Result<()> {
        self.file.set_len(0)
    }

    /// Whether the locked `.part` holds no bytes.
    pub fn is_empty(&self) -> io::Result<bool> {
        Ok(self.file.metadata()?.len() == 0)
    }
}

/// Reserve the blocks now, so a full disk fails at the start rather than at 90 %.
#[cfg(target_os = "linux")]
fn preallocate(file: &File, len: u64) -> io::Result<()> {
    use rustix::fs::{FallocateFlags, fallocate};
    if len == 0 {
        return Ok(());
    }
    match fallocate(file, FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(()),
        // Some file systems (tmpfs on old kernels, network mounts) cannot; a sparse file works.
        Err(rustix::io::Errno::OPNOTSUPP) => Ok(()),
        Err(errno) => Err(errno.into()),
    }
}

#[cfg(not(target_os = "linux"))]
fn preallocate(_file: &File, _len: u64) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_land_at_their_offsets_and_reopen_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.part");
        let part = PartFile::open(&path, Some(10)).unwrap();
        part.write_at(b"cd", 2).unwrap();
        part.write_at(b"ab", 0).unwrap();
        drop(part);
        let again = PartFile::open(&path, Some(10)).unwrap();
        let mut buf = [0u8; 4];
        again.read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"abcd");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 10);
    }

    #[test]
    fn a_link_is_never_opened_as_the_part() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("outside");
        std::fs::write(&target, b"precious").unwrap();
        let path = dir.path().join("x.part");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let error = PartFile::open(&path, Some(4)).unwrap_err();
        assert!(crate::store::atomic::is_link_error(&error), "{error}");
        assert!(PartFile::create_empty(&path, None).is_err());
        assert!(PartLock::acquire(&path).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
    }

    #[test]
    fn a_second_lock_on_one_part_is_refused_until_the_first_drops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.part");
        let first = PartLock::acquire(&path).unwrap();
        assert!(matches!(PartLock::acquire(&path), Err(PartLockError::Held)));
        drop(first);
        PartLock::acquire(&path).unwrap();
    }
}
