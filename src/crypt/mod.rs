//! Encryption at rest, in the standard age v1 format: a download encrypted to `age1…`
//! recipients is stored as `<name>.age`, which `age -d -i key.txt` decrypts byte for byte.
//!
//! # Writing out of order
//! age seals the plaintext in 64 KiB chunks whose nonce is the chunk's index (plus a flag on
//! the last one), so a chunk can be sealed as soon as all its bytes are known, in any order.
//! With the plaintext size known, the age file's size and every chunk's offset follow
//! ([`format`](mod@format)). Parallel ranges therefore write straight into the preallocated
//! `.part`, as for plain downloads; bytes of a chunk that is not yet complete wait in memory
//! (`sealed`). No plaintext byte is ever written to disk: not to the `.part`, not to a
//! temporary file, not to the index.
//!
//! # Resuming without the file key in the clear
//! Resume needs the file key of the `.part` (to seal the chunks still missing). The resume
//! state beside the `.part` keeps it wrapped, as a small age file, to a per-user *resume
//! identity* kept outside the data directory (`$XDG_STATE_HOME/claudedl/resume-identity.txt`,
//! else `~/.local/state/…`, mode 0600, created on first use; `$CLAUDEDL_RESUME_IDENTITY`
//! overrides the path). The finished `<name>.age` names only the user's recipients, and the
//! resume state (with the wrapped key) is deleted when the download completes.
//!
//! Threat model: the data directory alone (a shared or stolen disk, a backup) never reveals
//! plaintext or a file key: finished files need a recipient's identity, unfinished ones the
//! resume identity as well. Someone who also holds the resume identity can read what is
//! unfinished, never what has finished. Deleting the resume identity only makes unfinished
//! encrypted downloads start over.
//!
//! # Hashing
//! The engine hashes the plaintext (SHA-256, recorded in the index) in order while
//! downloading. [`SealedPart::write`] hands back the plaintext of the chunks it has just sealed
//! and written ([`Written`], shared [`bytes::Bytes`], no copy), and the engine keeps it in
//! memory until hashed (a bounded window; connections work on small pieces in order, close to
//! the hashed prefix). Only what is not there (written by a previous run, before a resume) is
//! read back from the `.part` and opened (authenticated and decrypted) again
//! ([`SealedPart::read_plain`]). Chunks are sealed and opened with aws-lc-rs's
//! ChaCha20-Poly1305 (assembly, already built for rustls), at about the speed of SHA-256
//! (~1.3 GB/s per core): sealing is what an encrypted download costs beyond a plain one.

mod decrypt;
pub mod format;
mod keys;
mod sealed;

use std::path::{Path, PathBuf};

use age::secrecy::ExposeSecret;
use age_core::format::FileKey;
use base64::Engine;
use base64::prelude::BASE64_STANDARD;

pub use crate::store::SealedState;

pub use decrypt::decrypt_file;
pub use keys::{RESUME_IDENTITY_ENV, Recipients, ResumeIdentity, load_identities};
pub use sealed::{PayloadOpener, SealedPart, Written};

/// Why an encryption or decryption step failed; names the file or key concerned.
#[derive(Debug, thiserror::Error)]
pub enum CryptError {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "invalid recipient {recipient:?} (from {origin}): expected an X25519 age recipient, age1…"
    )]
    BadRecipient { recipient: String, origin: String },
    #[error("no recipient to encrypt to")]
    NoRecipients,
    #[error("invalid identity file {}: {reason}", path.display())]
    BadIdentity { path: PathBuf, reason: String },
    #[error(
        "cannot locate the resume identity: set XDG_STATE_HOME, HOME or {}",
        keys::RESUME_IDENTITY_ENV
    )]
    NoStateDir,
    #[error(
        "{}: the identity in {} does not match any recipient of this file",
        file.display(), identity.display()
    )]
    NoMatchingIdentity { file: PathBuf, identity: PathBuf },
    #[error("{}: not a valid age file or damaged: {reason}", file.display())]
    Damaged { file: PathBuf, reason: String },
    #[error("{}: its header was not written with the saved key", path.display())]
    ForeignPart { path: PathBuf },
    #[error(
        "the resume state's file key cannot be unwrapped with the resume identity {}: {reason}",
        path.display()
    )]
    ResumeKey { path: PathBuf, reason: String },
    #[error("wrapping the file key: {0}")]
    Wrap(String),
}

impl CryptError {
    pub fn io(action: &'static str, path: impl AsRef<Path>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.as_ref().to_path_buf();
        move |source| CryptError::Io {
            action,
            path,
            source,
        }
    }
}

/// Where a download meant for `path` is stored: `path` itself, or [`age_path`] when it is
/// encrypted. The one place that decides an output's name.
pub fn output_path(path: PathBuf, encrypted: bool) -> PathBuf {
    if encrypted { age_path(&path) } else { path }
}

/// `path` with `.age` appended (unless it already ends so): where an encrypted download goes.
pub fn age_path(path: &Path) -> PathBuf {
    if path.extension().is_some_and(|ext| ext == "age") {
        return path.to_path_buf();
    }
    let mut name = path.as_os_str().to_owned();
    name.push(".age");
    PathBuf::from(name)
}

/// A new age file's secrets: its file key, header and payload nonce.
pub struct Fresh {
    pub file_key: FileKey,
    pub header: Vec<u8>,
    pub nonce: [u8; format::NONCE],
}

/// How downloads are encrypted: to whom, and the resume identity guarding unfinished ones.
pub struct Encryption {
    recipients: Recipients,
    resume: ResumeIdentity,
}

impl std::fmt::Debug for Encryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encryption")
            .field("recipients", &self.recipients)
            .field("resume", &self.resume.path())
            .finish()
    }
}

impl Encryption {
    pub fn new(recipients: Recipients, resume: ResumeIdentity) -> Encryption {
        Encryption { recipients, resume }
    }

    pub fn recipients(&self) -> &Recipients {
        &self.recipients
    }

    /// A fresh file key, its header for the recipients, a nonce, and the state to save.
    pub fn start(&self) -> Result<(Fresh, SealedState), CryptError> {
        let file_key = format::new_file_key();
        let mut stanzas = Vec::new();
        for recipient in self.recipients.keys() {
            let (wrapped, _labels) = age::Recipient::wrap_file_key(recipient, &file_key)
                .map_err(|e| CryptError::Wrap(e.to_string()))?;
            stanzas.extend(wrapped);
        }
        let header = format::header(&file_key, &stanzas);
        let state = SealedState {
            header_len: header.len() as u64,
            recipients: self.recipients.names().to_vec(),
            wrapped_key: self.wrap_for_resume(&file_key)?,
        };
        let fresh = Fresh {
            file_key,
            header,
            nonce: format::new_nonce(),
        };
        Ok((fresh, state))
    }

    /// Whether `state` was written for these recipients.
    pub fn same_recipients(&self, state: &SealedState) -> bool {
        state.recipients == self.recipients.names()
    }

    /// The file key saved in `state`.
    pub fn file_key(&self, state: &SealedState) -> Result<FileKey, CryptError> {
        let fail = |reason: String| CryptError::ResumeKey {
            path: self.resume.path().to_path_buf(),
            reason,
        };
        let wrapped = BASE64_STANDARD
            .decode(&state.wrapped_key)
            .map_err(|e| fail(e.to_string()))?;
        let identity = self.resume.identity();
        let mut reader = age::Decryptor::new(&wrapped[..])
            .and_then(|d| d.decrypt(std::iter::once(identity as &dyn age::Identity)))
            .map_err(|e| fail(e.to_string()))?;
        let mut key = zeroize::Zeroizing::new([0u8; age_core::format::FILE_KEY_BYTES]);
        std::io::Read::read_exact(&mut reader, &mut key[..]).map_err(|e| fail(e.to_string()))?;
        Ok(FileKey::init_with_mut(|slot| {
            slot.copy_from_slice(&key[..])
        }))
    }

    fn wrap_for_resume(&self, file_key: &FileKey) -> Result<String, CryptError> {
        let recipient = self.resume.recipient();
        let encryptor =
            age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                .map_err(|e| CryptError::Wrap(e.to_string()))?;
        let mut wrapped = Vec::new();
        let write = |wrapped: &mut Vec<u8>| -> std::io::Result<()> {
            let mut writer = encryptor.wrap_output(wrapped)?;
            std::io::Write::write_all(&mut writer, file_key.expose_secret())?;
            writer.finish()?;
            Ok(())
        };
        write(&mut wrapped).map_err(|e| CryptError::Wrap(e.to_string()))?;
        Ok(BASE64_STANDARD.encode(wrapped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_saved_file_key_unwraps_only_with_the_resume_identity() {
        let dir = tempfile::tempdir().unwrap();
        let recipient = age::x25519::Identity::generate().to_public().to_string();
        let recipients = Recipients::parse(&[recipient], &[]).unwrap();
        let resume = ResumeIdentity::load_or_create(&dir.path().join("a.txt")).unwrap();
        let encryption = Encryption::new(recipients.clone(), resume);
        let (fresh, state) = encryption.start().unwrap();
        assert!(encryption.same_recipients(&state));
        assert!(
            !state
                .wrapped_key
                .contains(&hex::encode(fresh.file_key.expose_secret()))
        );
        let key = encryption.file_key(&state).unwrap();
        assert_eq!(key.expose_secret(), fresh.file_key.expose_secret());
        assert!(format::header_matches(&key, &fresh.header));

        let other = ResumeIdentity::load_or_create(&dir.path().join("b.txt")).unwrap();
        let stranger = Encryption::new(recipients, other);
        assert!(matches!(
            stranger.file_key(&state),
            Err(CryptError::ResumeKey { .. })
        ));
    }

    /// Seal `plain` out of order through [`SealedPart`] into an age file for a new identity;
    /// returns the file and the identity file.
    fn seal_for_test(dir: &Path, plain: &[u8]) -> (PathBuf, PathBuf) {
        let identity = age::x25519::Identity::generate();
        let key_file = dir.join("key.txt");
        std::fs::write(&key_file, identity.to_string().expose_secret()).unwrap();
        let recipients = Recipients::parse(&[identity.to_public().to_string()], &[]).unwrap();
        let resume = ResumeIdentity::load_or_create(&dir.join("resume.txt")).unwrap();
        let (fresh, _) = Encryption::new(recipients, resume).start().unwrap();
        let total = plain.len() as u64;
        let path = dir.join("out.age");
        let len = format::sealed_len(fresh.header.len() as u64, total);
        let part = crate::store::PartFile::open(&path, Some(len)).unwrap();
        let sealed = SealedPart::create(
            part,
            &fresh.file_key,
            &fresh.header,
            &fresh.nonce,
            Some(total),
        )
        .unwrap();
        let middle = plain.len() / 3;
        let plain = bytes::Bytes::copy_from_slice(plain);
        sealed.write(&plain.slice(middle..), middle as u64).unwrap();
        sealed.write(&plain.slice(..middle), 0).unwrap();
        sealed.finish(total).unwrap();
        (path, key_file)
    }

    #[test]
    fn an_out_of_order_file_decrypts_with_the_age_crate_and_decrypt_file() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0usize, 5, 65536, 65536 * 3 + 17] {
            let mut plain = vec![0u8; len];
            rand::fill(&mut plain[..]);
            let (path, key_file) = seal_for_test(dir.path(), &plain);
            let out = dir.path().join("plain");
            assert_eq!(decrypt_file(&path, &key_file, &out).unwrap(), len as u64);
            assert_eq!(std::fs::read(&out).unwrap(), plain, "length {len}");
        }
    }

    #[test]
    fn a_wrong_identity_is_named_and_leaves_no_output() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = seal_for_test(dir.path(), b"secret");
        let other = dir.path().join("other.txt");
        let stranger = age::x25519::Identity::generate();
        std::fs::write(&other, stranger.to_string().expose_secret()).unwrap();
        let out = dir.path().join("plain");
        let error = decrypt_file(&path, &other, &out).unwrap_err();
        assert!(matches!(error, CryptError::NoMatchingIdentity { .. }));
        assert!(
            error.to_string().contains("does not match any recipient"),
            "{error}"
        );
        assert!(!out.exists());
    }
}
