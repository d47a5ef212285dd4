//! Decrypting an age file to a plaintext file: written to a temporary file beside the output
//! and renamed over it only once every chunk has been authenticated, so a wrong key or a
//! damaged file never leaves a half-written output.

use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use super::{CryptError, load_identities};
use crate::store::atomic::rename_durable;

/// Decrypt `input` with the identities in `identity_file` into `output`; returns the plaintext
/// size.
pub fn decrypt_file(input: &Path, identity_file: &Path, output: &Path) -> Result<u64, CryptError> {
    let identities = load_identities(identity_file)?;
    let file = std::fs::File::open(input).map_err(CryptError::io("opening", input))?;
    let damaged = |reason: String| CryptError::Damaged {
        file: input.to_path_buf(),
        reason,
    };
    let decryptor = age::Decryptor::new_buffered(BufReader::new(file)).map_err(|e| match e {
        age::DecryptError::Io(source) => CryptError::io("reading", input)(source),
        other => damaged(other.to_string()),
    })?;
    let mut reader = decryptor
        .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => CryptError::NoMatchingIdentity {
                file: input.to_path_buf(),
                identity: identity_file.to_path_buf(),
            },
            other => damaged(other.to_string()),
        })?;
    let temp = temp_beside(output);
    let copied = (|| {
        let mut out = std::fs::File::create(&temp)?;
        let size = std::io::copy(&mut reader, &mut out)?;
        out.flush()?;
        out.sync_all()?;
        Ok(size)
    })();
    let size = copied.map_err(|e: std::io::Error| {
        let _ = std::fs::remove_file(&temp);
        match e.kind() {
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
                damaged(e.to_string())
            }
            _ => CryptError::io("writing", output)(e),
        }
    })?;
    rename_durable(&temp, output).map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        CryptError::io("renaming", output)(e)
    })?;
    Ok(size)
}

/// `dir/.name.decrypting-PID`.
fn temp_beside(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    output.with_file_name(format!(".{name}.decrypting-{}", std::process::id()))
}
