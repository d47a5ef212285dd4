//! Keys: the user's recipients (`age1…`), identity files for decrypting, and the per-user
//! resume identity that guards in-flight file keys.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use age::secrecy::ExposeSecret;
use age::x25519;

use super::CryptError;

/// Overrides where the resume identity lives (tests, unusual setups).
pub const RESUME_IDENTITY_ENV: &str = "CLAUDEDL_RESUME_IDENTITY";

/// The X25519 recipients a download is encrypted to, in the order given.
#[derive(Clone)]
pub struct Recipients {
    keys: Vec<x25519::Recipient>,
    names: Vec<String>,
}

impl std::fmt::Debug for Recipients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.names).finish()
    }
}

impl Recipients {
    /// Parse `age1…` strings (from `--encrypt-to`) and the lines of recipients files (age's
    /// format: one recipient per line, blank lines and `#` comments ignored).
    pub fn parse(given: &[String], files: &[PathBuf]) -> Result<Recipients, CryptError> {
        let mut recipients = Recipients {
            keys: Vec::new(),
            names: Vec::new(),
        };
        for text in given {
            recipients.add(text.trim(), "--encrypt-to")?;
        }
        for file in files {
            let text = std::fs::read_to_string(file).map_err(CryptError::io("reading", file))?;
            let lines = text.lines().map(str::trim);
            for line in lines.filter(|l| !l.is_empty() && !l.starts_with('#')) {
                recipients.add(line, &file.display().to_string())?;
            }
        }
        if recipients.keys.is_empty() {
            return Err(CryptError::NoRecipients);
        }
        Ok(recipients)
    }

    fn add(&mut self, text: &str, source: &str) -> Result<(), CryptError> {
        let key: x25519::Recipient = text.parse().map_err(|_| CryptError::BadRecipient {
            recipient: text.chars().take(80).collect(),
            origin: source.to_owned(),
        })?;
        let name = key.to_string();
        if !self.names.contains(&name) {
            self.keys.push(key);
            self.names.push(name);
        }
        Ok(())
    }

    pub fn keys(&self) -> &[x25519::Recipient] {
        &self.keys
    }

    /// The canonical `age1…` strings, in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// The identities in an age identity file (as written by `age-keygen`).
pub fn load_identities(
    path: &Path,
) -> Result<Vec<Box<dyn age::Identity + Send + Sync>>, CryptError> {
    let bad = |reason: String| CryptError::BadIdentity {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(CryptError::io("reading", path))?;
    let file = age::IdentityFile::from_buffer(&bytes[..]).map_err(|e| bad(e.to_string()))?;
    let identities = file.into_identities().map_err(|e| bad(e.to_string()))?;
    if identities.is_empty() {
        return Err(bad("it holds no identity".into()));
    }
    Ok(identities)
}

/// The per-user identity that the file keys of in-flight encrypted downloads are wrapped to,
/// kept outside the data directory (see the module documentation of [`crate::crypt`]).
pub struct ResumeIdentity {
    identity: x25519::Identity,
    path: PathBuf,
}

impl ResumeIdentity {
    /// Load the resume identity, creating it (mode 0600) on first use.
    pub fn load_or_create(path: &Path) -> Result<ResumeIdentity, CryptError> {
        if !path.exists() {
            create_identity_file(path)?;
        }
        let text = std::fs::read_to_string(path).map_err(CryptError::io("reading", path))?;
        let identity = text
            .lines()
            .map(str::trim)
            .find(|line| line.starts_with("AGE-SECRET-KEY-"))
            .and_then(|line| line.parse().ok())
            .ok_or_else(|| CryptError::BadIdentity {
                path: path.to_path_buf(),
                reason: "no AGE-SECRET-KEY-1… line".into(),
            })?;
        Ok(ResumeIdentity {
            identity,
            path: path.to_path_buf(),
        })
    }

    /// `$CLAUDEDL_RESUME_IDENTITY`, else `$XDG_STATE_HOME/claudedl/resume-identity.txt`, else
    /// `~/.local/state/claudedl/resume-identity.txt`.
    pub fn default_path() -> Result<PathBuf, CryptError> {
        let env = |name| std::env::var_os(name).filter(|v| !v.is_empty());
        if let Some(path) = env(RESUME_IDENTITY_ENV) {
            return Ok(PathBuf::from(path));
        }
        let state = env("XDG_STATE_HOME")
            .map(PathBuf::from)
            .or_else(|| env("HOME").map(|home| Path::new(&home).join(".local/state")))
            .ok_or(CryptError::NoStateDir)?;
        Ok(state.join("claudedl").join("resume-identity.txt"))
    }

    pub fn identity(&self) -> &x25519::Identity {
        &self.identity
    }

    pub fn recipient(&self) -> x25519::Recipient {
        self.identity.to_public()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Write a new identity beside `path` with mode 0600, then link it into place: a concurrent
/// process creating the same file either wins or reads the winner's, never a half-written one.
fn create_identity_file(path: &Path) -> Result<(), CryptError> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(CryptError::io("creating", dir))?;
    }
    let identity = x25519::Identity::generate();
    let text = format!(
        "# claudedl resume identity: guards the file keys of unfinished encrypted downloads.\n\
         # Deleting it only makes those downloads start over.\n\
         # public key: {}\n{}\n",
        identity.to_public(),
        identity.to_string().expose_secret()
    );
    let temp = path.with_extension(format!("tmp-{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut file| {
            file.write_all(text.as_bytes())?;
            file.sync_all()
        });
    let linked = written.and_then(|()| match std::fs::hard_link(&temp, path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    });
    let _ = std::fs::remove_file(&temp);
    linked.map_err(CryptError::io("creating", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

    #[test]
    fn parses_flags_and_files_skipping_comments_and_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("recipients.txt");
        let other = x25519::Identity::generate().to_public().to_string();
        std::fs::write(&file, format!("# team\n\n{other}\n  {ALICE}  \n")).unwrap();
        let recipients = Recipients::parse(&[ALICE.into()], &[file]).unwrap();
        assert_eq!(recipients.names(), [ALICE.to_owned(), other]);
    }

    #[test]
    fn a_bad_recipient_is_named() {
        let error = Recipients::parse(&["age1nope".into()], &[]).unwrap_err();
        assert!(error.to_string().contains("age1nope"), "{error}");
        assert!(matches!(
            Recipients::parse(&[], &[]),
            Err(CryptError::NoRecipients)
        ));
    }

    #[test]
    fn the_resume_identity_is_created_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/claudedl/resume-identity.txt");
        let first = ResumeIdentity::load_or_create(&path).unwrap();
        let again = ResumeIdentity::load_or_create(&path).unwrap();
        assert_eq!(first.recipient().to_string(), again.recipient().to_string());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
