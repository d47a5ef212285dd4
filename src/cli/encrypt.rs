//! Encryption at rest from the flags (`--encrypt-to`, `--recipients-file`, `--no-encrypt`)
//! over the config file's `[crypt]` section.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::bail;
use claudedl::config::Settings;
use claudedl::crypt::{CryptError, Encryption, Recipients, ResumeIdentity};

use super::args::EncryptArgs;
use super::common::UsageError;

impl EncryptArgs {
    /// The encryption asked for by the flags, else by the config file's `[crypt]` section, if
    /// any (loading or creating the resume identity).
    pub fn encryption(&self, settings: &Settings) -> anyhow::Result<Option<Arc<Encryption>>> {
        let Some(recipients) = self.recipients(settings)? else {
            return Ok(None);
        };
        let resume = ResumeIdentity::load_or_create(&ResumeIdentity::default_path()?)?;
        Ok(Some(Arc::new(Encryption::new(recipients, resume))))
    }

    /// The recipients of the flags if any is given, else of the config file; none with
    /// `--no-encrypt`.
    fn recipients(&self, settings: &Settings) -> anyhow::Result<Option<Recipients>> {
        if self.no_encrypt {
            return Ok(None);
        }
        if self.encrypt_to.is_empty() && self.recipients_files.is_empty() {
            return configured_recipients(settings);
        }
        let recipients = Recipients::parse(&self.encrypt_to, &self.recipients_files)
            .map_err(|e| UsageError(e.to_string()))?;
        Ok(Some(recipients))
    }
}

/// The config file's `[crypt] recipients` and `recipients_file`, if it names any.
fn configured_recipients(settings: &Settings) -> anyhow::Result<Option<Recipients>> {
    let listed = &settings.crypt_recipients;
    let files: Vec<PathBuf> = settings
        .crypt_recipients_file
        .iter()
        .map(|file| file.value.clone())
        .collect();
    if listed.value.is_empty() && files.is_empty() {
        return Ok(None);
    }
    // Checked here so that a bad key is blamed on the file, not on `--encrypt-to`.
    for recipient in &listed.value {
        if recipient.trim().parse::<age::x25519::Recipient>().is_err() {
            bail!(UsageError(format!(
                "invalid recipient {recipient:?} in [crypt] recipients ({}): expected an X25519 \
                 age recipient, age1…",
                listed.source
            )));
        }
    }
    let recipients = Recipients::parse(&listed.value, &files).map_err(|e| match &e {
        CryptError::NoRecipients => UsageError(format!(
            "{e}: the config file's [crypt] recipients_file lists none"
        )),
        _ => UsageError(e.to_string()),
    })?;
    Ok(Some(recipients))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use claudedl::config::{Layer, file, resolve};

    const ALICE: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

    /// The settings of a config file holding `toml`, with no flags and no environment.
    fn settings_of(dir: &Path, toml: &str) -> Settings {
        let path = dir.join("claudedl.toml");
        std::fs::write(&path, toml).unwrap();
        resolve(
            &Layer::default(),
            |_| None,
            Some(&file::load(&path).unwrap()),
        )
    }

    fn recipients_of(args: &EncryptArgs, settings: &Settings) -> Option<Vec<String>> {
        let recipients = args.recipients(settings).unwrap();
        recipients.map(|r| r.names().to_vec())
    }

    #[test]
    fn the_file_s_recipients_apply_unless_a_flag_replaces_them() {
        let dir = tempfile::tempdir().unwrap();
        let bob = age::x25519::Identity::generate().to_public().to_string();
        let listed = dir.path().join("recipients.txt");
        std::fs::write(&listed, format!("# bob\n{bob}\n")).unwrap();
        let toml = format!("[crypt]\nrecipients = [\"{ALICE}\"]\nrecipients_file = {listed:?}\n");
        let settings = settings_of(dir.path(), &toml);
        let none = EncryptArgs::default();
        assert_eq!(
            recipients_of(&none, &settings),
            Some(vec![ALICE.to_owned(), bob.clone()])
        );
        let flag = EncryptArgs {
            encrypt_to: vec![bob.clone()],
            ..EncryptArgs::default()
        };
        assert_eq!(recipients_of(&flag, &settings), Some(vec![bob]));
        let off = EncryptArgs {
            no_encrypt: true,
            ..EncryptArgs::default()
        };
        assert_eq!(recipients_of(&off, &settings), None);
        let empty = settings_of(dir.path(), "[crypt]\n");
        assert_eq!(recipients_of(&none, &empty), None);
    }

    #[test]
    fn a_bad_recipient_in_the_file_is_blamed_on_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let settings = settings_of(dir.path(), "[crypt]\nrecipients = [\"age1nope\"]\n");
        let error = configured_recipients(&settings).unwrap_err().to_string();
        assert!(
            error.contains("age1nope")
                && error.contains("[crypt] recipients")
                && error.contains("claudedl.toml"),
            "{error}"
        );
    }
}
