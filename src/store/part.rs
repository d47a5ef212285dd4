//! The `.part` file: preallocated to the final size and written in place at each range's
//! offset, so parallel ranges need neither per-range files nor a merge step.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A shared handle to the `.part` file; cheap to clone, safe to write from many tasks.
#[derive(Debug, Clone)]
pub struct PartFile {
    file: Arc<File>,
    path: PathBuf,
}

impl PartFile {
    /// Open `path` keeping what it holds (for resume), sized to `len` when the size is known.
    pub fn open(path: &Path, len: Option<u64>) -> io::Result<PartFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
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
        File::create(path)?;
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
}
