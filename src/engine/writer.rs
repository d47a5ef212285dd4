//! Where a transfer's bytes go: into the `.part` as they are, or sealed into an age file
//! ([`crate::crypt`]). Offsets and ranges are always plaintext offsets; the ledger, the resume
//! state and the hasher never see the difference.

use std::io;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

pub use crate::crypt::Written;
use crate::crypt::{CryptError, Encryption, SealedPart, format::sealed_len};
use crate::store::{PartFile, ResumeState};

/// The `.part` of one transfer, plain or sealed. Cheap to clone.
#[derive(Clone)]
pub enum PartWriter {
    Plain(PartFile),
    Sealed(Arc<SealedPart>),
}

impl PartWriter {
    /// Open the `.part` for `state`. When encrypting, a state that carries a saved file key
    /// continues that age file; any other state gets a new file key, recorded (wrapped) in it.
    pub fn open(
        encrypt: Option<&Encryption>,
        path: &Path,
        state: &mut ResumeState,
        total: Option<u64>,
    ) -> Result<PartWriter, CryptError> {
        let Some(encryption) = encrypt else {
            let part = PartFile::open(path, total).map_err(CryptError::io("opening", path))?;
            return Ok(PartWriter::Plain(part));
        };
        if let (Some(saved), Some(total)) = (&state.crypt, total) {
            let file_key = encryption.file_key(saved)?;
            let len = sealed_len(saved.header_len, total);
            let part = PartFile::open(path, Some(len)).map_err(CryptError::io("opening", path))?;
            let sealed = SealedPart::reopen(part, &file_key, saved.header_len, total)?;
            return Ok(PartWriter::Sealed(Arc::new(sealed)));
        }
        let (fresh, saved) = encryption.start()?;
        let len = total.map(|total| sealed_len(fresh.header.len() as u64, total));
        let part = PartFile::open(path, len).map_err(CryptError::io("opening", path))?;
        let sealed = SealedPart::create(part, &fresh.file_key, &fresh.header, &fresh.nonce, total)
            .map_err(CryptError::io("writing", path))?;
        state.crypt = Some(saved);
        Ok(PartWriter::Sealed(Arc::new(sealed)))
    }

    /// Whether the `.part` at `path` with `state` can be continued under `encrypt`: both plain,
    /// or sealed for the same recipients with a file key that unwraps and matches the header.
    pub fn resumable(encrypt: Option<&Encryption>, state: &ResumeState, path: &Path) -> bool {
        match (encrypt, &state.crypt, state.total) {
            (None, None, _) => true,
            (Some(encryption), Some(saved), Some(total)) => {
                encryption.same_recipients(saved)
                    && encryption.file_key(saved).is_ok_and(|file_key| {
                        PartFile::open(path, None).is_ok_and(|part| {
                            SealedPart::reopen(part, &file_key, saved.header_len, total).is_ok()
                        })
                    })
            }
            _ => false,
        }
    }

    pub fn path(&self) -> &Path {
        self.file().path()
    }

    fn file(&self) -> &PartFile {
        match self {
            PartWriter::Plain(part) => part,
            PartWriter::Sealed(sealed) => sealed.part(),
        }
    }

    /// Take `data` at plaintext offset `at` (blocking); returns the plaintext now written to the
    /// `.part` (for sealed parts, only whole chunks).
    pub fn write_at(&self, data: Bytes, at: u64) -> io::Result<Vec<Written>> {
        match self {
            PartWriter::Plain(part) => {
                part.write_at(&data, at)?;
                Ok(vec![Written { at, plain: data }])
            }
            PartWriter::Sealed(sealed) => sealed.write(&data, at),
        }
    }

    /// All `size` plaintext bytes have arrived; returns the plaintext written only now.
    pub fn finish(&self, size: u64) -> io::Result<Vec<Written>> {
        match self {
            PartWriter::Plain(_) => Ok(Vec::new()),
            PartWriter::Sealed(sealed) => sealed.finish(size),
        }
    }

    /// Read plaintext back from written ranges (blocking); `at` is where a previous read ended.
    pub fn read_plain(&self, buf: &mut [u8], at: u64) -> io::Result<()> {
        match self {
            PartWriter::Plain(part) => part.read_at(buf, at),
            PartWriter::Sealed(sealed) => sealed.read_plain(buf, at),
        }
    }

    /// Make written data durable (blocking).
    pub fn sync_data(&self) -> io::Result<()> {
        self.file().sync_data()
    }

    /// The size of the complete `.part` for `size` plaintext bytes.
    pub fn stored_len(&self, size: u64) -> u64 {
        match self {
            PartWriter::Plain(_) => size,
            PartWriter::Sealed(sealed) => sealed.sealed_len(size),
        }
    }
}
