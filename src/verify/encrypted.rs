//! The files of the data directory as verify reads them ([`DataFiles`]): plain files as they
//! are; encrypted ones (`NAME.age`) decrypted in a stream with the user's [`Identities`], so
//! their plaintext is hashed against the index, or, without identities, checked for presence
//! and for the size an age file of the recorded plaintext size has (see
//! [`crate::crypt::format`]: the header, a 16-byte nonce, then 64 KiB chunks each with a 16-byte
//! tag).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::crypt::format::{CHUNK, NONCE, SEALED_CHUNK, TAG, sealed_len};
use crate::crypt::{CryptError, load_identities};

use super::{Item, Opened, Opener, VerifyError};

/// The first line of every age v1 file.
const MAGIC: &[u8] = b"age-encryption.org/v1\n";
/// A header line longer than this, or a header longer than [`MAX_HEADER`], is damage.
const MAX_LINE: u64 = 4096;
const MAX_HEADER: u64 = 1 << 20;

/// Age identities to decrypt with, read from identity files (as `age-keygen` writes them).
pub struct Identities {
    files: Vec<PathBuf>,
    keys: Vec<Box<dyn age::Identity + Send + Sync>>,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identities")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Identities {
    /// Every identity in `files`.
    pub fn load(files: &[PathBuf]) -> Result<Identities, CryptError> {
        let mut keys = Vec::new();
        for file in files {
            keys.extend(load_identities(file)?);
        }
        Ok(Identities {
            files: files.to_vec(),
            keys,
        })
    }

    /// The identity files, for messages.
    fn names(&self) -> String {
        let names: Vec<String> = self.files.iter().map(|f| f.display().to_string()).collect();
        names.join(", ")
    }

    /// Read the age header of `file` and unwrap its file key with one of the identities.
    fn unlock(
        &self,
        file: File,
    ) -> Result<age::stream::StreamReader<BufReader<File>>, age::DecryptError> {
        let keys = self.keys.iter().map(|k| k.as_ref() as &dyn age::Identity);
        age::Decryptor::new_buffered(BufReader::with_capacity(SEALED_CHUNK as usize, file))?
            .decrypt(keys)
    }

    /// The plaintext of `file`, authenticated chunk by chunk as it is read.
    fn decrypt(&self, file: File) -> io::Result<Box<dyn Read>> {
        let reader = self.unlock(file).map_err(|error| match error {
            age::DecryptError::Io(error) => error,
            age::DecryptError::NoMatchingKeys => io::Error::other(format!(
                "none of the identities in {} opens it (it was encrypted to other recipients, \
                 or its header is damaged)",
                self.names()
            )),
            other => damaged(format!("its header: {other}")),
        })?;
        Ok(Box::new(Decrypting(reader)))
    }
}

/// A decrypting reader whose errors say what they mean for the file.
struct Decrypting<R>(R);

impl<R: Read> Read for Decrypting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|error| match error.kind() {
            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => damaged(format!(
                "{error} (a chunk fails authentication: the file was changed, cut or extended)"
            )),
            _ => error,
        })
    }
}

fn damaged(reason: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("damaged age file: {reason}"),
    )
}

/// Opens the files of the data directory at `root`; encrypted ones with `identities` if given.
pub struct DataFiles<'a> {
    root: &'a Path,
    identities: Option<&'a Identities>,
}

impl<'a> DataFiles<'a> {
    pub fn new(root: &'a Path, identities: Option<&'a Identities>) -> DataFiles<'a> {
        DataFiles { root, identities }
    }
}

impl Opener for DataFiles<'_> {
    fn open(&self, item: &Item) -> io::Result<Opened> {
        let file = File::open(self.root.join(&item.path))?;
        if !item.encrypted {
            return Ok(Opened::Plain(Box::new(file)));
        }
        match self.identities {
            Some(identities) => identities.decrypt(file).map(Opened::Plain),
            None => {
                check_size(file, item.size)?;
                Ok(Opened::Unchecked)
            }
        }
    }

    /// With identities: try them on the encrypted files in turn until one opens; if none does
    /// and some refused them (rather than being missing or damaged), the identities are wrong.
    fn preflight(&self, items: &[Item]) -> Result<(), VerifyError> {
        let Some(identities) = self.identities else {
            return Ok(());
        };
        let mut refused = None;
        for item in items.iter().filter(|item| item.encrypted) {
            let Ok(file) = File::open(self.root.join(&item.path)) else {
                continue;
            };
            match identities.unlock(file) {
                Ok(_) => return Ok(()),
                Err(age::DecryptError::NoMatchingKeys) => {
                    refused.get_or_insert(&item.path);
                }
                Err(_) => {}
            }
        }
        match refused {
            Some(file) => Err(VerifyError::WrongIdentity {
                identities: identities.names(),
                file: file.clone(),
            }),
            None => Ok(()),
        }
    }
}

/// Whether the size of the age file `file` fits a plaintext of `plain` bytes (any plaintext
/// when `None`), reading only its header.
fn check_size(file: File, plain: Option<u64>) -> io::Result<()> {
    let len = file.metadata()?.len();
    let header = header_len(&mut BufReader::new(file))?;
    let found = len.checked_sub(header + NONCE as u64).and_then(plain_len);
    match (found, plain) {
        (Some(found), Some(expected)) if found != expected => Err(damaged(format!(
            "{len} bytes, but an age file of the {expected} bytes the index records has {}",
            sealed_len(header, expected)
        ))),
        (Some(_), _) => Ok(()),
        (None, _) => Err(damaged(format!("{len} bytes is no age file's size"))),
    }
}

/// The length of the age header at the start of `reader`: up to and including its MAC line
/// (`--- …\n`).
fn header_len(reader: &mut impl BufRead) -> io::Result<u64> {
    let mut line = Vec::new();
    let mut len = 0;
    loop {
        line.clear();
        let read = reader.take(MAX_LINE).read_until(b'\n', &mut line)? as u64;
        if read == 0 || line.last() != Some(&b'\n') || len + read > MAX_HEADER {
            return Err(damaged("its header is cut short or overlong".into()));
        }
        if len == 0 && line != MAGIC {
            return Err(damaged("it does not start with age's header line".into()));
        }
        len += read;
        if line.starts_with(b"--- ") {
            return Ok(len);
        }
    }
}

/// The plaintext size of an age payload (the chunks after the nonce) of `payload` bytes: every
/// chunk but the last holds 64 KiB, the last 1..=64 KiB (0 only when it is the only one), and
/// each carries a 16-byte tag. None when no plaintext size gives `payload`.
fn plain_len(payload: u64) -> Option<u64> {
    let (full, rest) = (payload / SEALED_CHUNK, payload % SEALED_CHUNK);
    match rest {
        0 if full > 0 => Some(full * CHUNK),
        rest if rest > TAG => Some(full * CHUNK + rest - TAG),
        rest if rest == TAG && full == 0 => Some(0),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use age::secrecy::ExposeSecret;

    use super::*;
    use crate::verify::ItemKind;

    #[test]
    fn the_plaintext_size_follows_from_the_payload_size() {
        for plain in [
            0,
            1,
            17,
            CHUNK - 1,
            CHUNK,
            CHUNK + 1,
            3 * CHUNK,
            3 * CHUNK + 20,
        ] {
            let payload = sealed_len(0, plain) - NONCE as u64;
            assert_eq!(plain_len(payload), Some(plain), "{plain}");
        }
        for payload in [0, TAG - 1, SEALED_CHUNK + TAG, SEALED_CHUNK + 3] {
            assert_eq!(plain_len(payload), None, "{payload}");
        }
    }

    /// An age file of `plain` for a new identity, written by the `age` crate, in `dir`;
    /// returns the identity file and the file's path relative to `dir`.
    fn encrypted(dir: &Path, name: &str, plain: &[u8], recipients: usize) -> (PathBuf, Item) {
        let identities: Vec<_> = (0..recipients)
            .map(|_| age::x25519::Identity::generate())
            .collect();
        let key_file = dir.join(format!("{name}.key"));
        std::fs::write(&key_file, identities[0].to_string().expose_secret()).unwrap();
        let public: Vec<_> = identities.iter().map(|i| i.to_public()).collect();
        let encryptor =
            age::Encryptor::with_recipients(public.iter().map(|r| r as &dyn age::Recipient))
                .unwrap();
        let mut sealed = Vec::new();
        let mut writer = encryptor.wrap_output(&mut sealed).unwrap();
        writer.write_all(plain).unwrap();
        writer.finish().unwrap();
        std::fs::write(dir.join(name), sealed).unwrap();
        let item = Item {
            kind: ItemKind::File,
            id: name.into(),
            path: name.into(),
            sha256: Some("00".into()),
            size: Some(plain.len() as u64),
            encrypted: true,
        };
        (key_file, item)
    }

    fn read_all(opened: io::Result<Opened>) -> io::Result<Vec<u8>> {
        let Opened::Plain(mut reader) = opened? else {
            panic!("expected a reader");
        };
        let mut plain = Vec::new();
        reader.read_to_end(&mut plain)?;
        Ok(plain)
    }

    #[test]
    fn without_identities_only_the_size_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let files = DataFiles::new(dir.path(), None);
        for (len, recipients) in [(0, 1), (5, 3), (CHUNK as usize, 1), (200_000, 2)] {
            let (_, item) = encrypted(dir.path(), "a.age", &vec![9; len], recipients);
            assert!(matches!(files.open(&item), Ok(Opened::Unchecked)), "{len}");
            let other_size = Item {
                size: Some(len as u64 + 1),
                ..item.clone()
            };
            let error = files.open(&other_size).err().unwrap();
            assert!(error.to_string().contains("the index records"), "{error}");
        }
        let (_, item) = encrypted(dir.path(), "b.age", b"abc", 1);
        let mut bytes = std::fs::read(dir.path().join("b.age")).unwrap();
        // 3 + 16 payload bytes cut to 10: shorter than a tag.
        bytes.truncate(bytes.len() - 9);
        std::fs::write(dir.path().join("b.age"), &bytes).unwrap();
        let batch = Item { size: None, ..item };
        let error = files.open(&batch).err().unwrap();
        assert!(error.to_string().contains("no age file's size"), "{error}");
        std::fs::write(dir.path().join("b.age"), b"plain text\n").unwrap();
        let error = files.open(&batch).err().unwrap();
        assert!(error.to_string().contains("header"), "{error}");
    }

    #[test]
    fn identities_decrypt_and_a_changed_chunk_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let plain: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
        let (key, item) = encrypted(dir.path(), "a.age", &plain, 2);
        let identities = Identities::load(&[key]).unwrap();
        let files = DataFiles::new(dir.path(), Some(&identities));
        files.preflight(std::slice::from_ref(&item)).unwrap();
        assert_eq!(read_all(files.open(&item)).unwrap(), plain);

        let path = dir.path().join("a.age");
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() - 1000;
        bytes[at] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let error = read_all(files.open(&item)).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(
            error.to_string().contains("fails authentication"),
            "{error}"
        );
    }

    #[test]
    fn identities_that_open_no_file_stop_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let (_, first) = encrypted(dir.path(), "a.age", b"one", 1);
        let (key_b, second) = encrypted(dir.path(), "b.age", b"two", 1);
        let (stranger, _) = encrypted(dir.path(), "c.age", b"three", 1);
        let items = [first.clone(), second];

        let only_b = Identities::load(std::slice::from_ref(&key_b)).unwrap();
        let files = DataFiles::new(dir.path(), Some(&only_b));
        files.preflight(&items).unwrap();
        let error = read_all(files.open(&first)).unwrap_err();
        assert!(
            error.to_string().contains("none of the identities"),
            "{error}"
        );

        let wrong = Identities::load(std::slice::from_ref(&stranger)).unwrap();
        let error = DataFiles::new(dir.path(), Some(&wrong))
            .preflight(&items)
            .unwrap_err();
        assert!(matches!(&error, VerifyError::WrongIdentity { file, .. } if file == "a.age"));
        let message = error.to_string();
        assert!(
            message.contains(&stranger.display().to_string()),
            "{message}"
        );
    }
}
