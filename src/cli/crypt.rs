//! Encryption flags (`--encrypt-to`, `--recipients-file`) and `claudedl decrypt`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::bail;
use clap::Args;

use super::{ExitStatus, UsageError};
use crate::crypt::{Encryption, Recipients, ResumeIdentity, decrypt_file};

/// Encryption at rest, shared by `get`, `files get` and `sync`.
#[derive(Debug, Args, Clone, Default)]
pub struct EncryptArgs {
    /// Store downloads as age files (`NAME.age`) encrypted to this recipient (age1…;
    /// repeatable). No plaintext byte is written to disk.
    #[arg(long = "encrypt-to", value_name = "RECIPIENT")]
    pub encrypt_to: Vec<String>,
    /// Encrypt to the recipients listed in FILE (one per line, `#` comments; repeatable).
    #[arg(long = "recipients-file", value_name = "FILE")]
    pub recipients_files: Vec<PathBuf>,
}

impl EncryptArgs {
    /// The encryption asked for, if any (loading or creating the resume identity).
    pub fn encryption(&self) -> anyhow::Result<Option<Arc<Encryption>>> {
        if self.encrypt_to.is_empty() && self.recipients_files.is_empty() {
            return Ok(None);
        }
        let recipients = Recipients::parse(&self.encrypt_to, &self.recipients_files)
            .map_err(|e| UsageError(e.to_string()))?;
        let resume = ResumeIdentity::load_or_create(&ResumeIdentity::default_path()?)?;
        Ok(Some(Arc::new(Encryption::new(recipients, resume))))
    }
}

#[derive(Debug, Args)]
pub struct DecryptArgs {
    /// The age file to decrypt.
    pub file: PathBuf,
    /// Identity file (as written by age-keygen).
    #[arg(short = 'i', long = "identity", value_name = "IDENTITY")]
    pub identity: PathBuf,
    /// Output file (default: FILE without its `.age` suffix). Written whole or not at all.
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// Replace OUT if it exists.
    #[arg(long)]
    pub force: bool,
}

/// `claudedl decrypt FILE.age -i IDENTITY [-o OUT]`.
pub fn decrypt(args: DecryptArgs) -> anyhow::Result<ExitStatus> {
    let output = match &args.output {
        Some(output) => output.clone(),
        None => match args.file.to_str().and_then(|f| f.strip_suffix(".age")) {
            Some(stem) if !stem.is_empty() => PathBuf::from(stem),
            _ => bail!(UsageError(format!(
                "{} does not end in .age: name the output with -o",
                args.file.display()
            ))),
        },
    };
    if output.exists() && !args.force {
        bail!(
            "{} exists: pass --force to replace it, or -o to write elsewhere",
            output.display()
        );
    }
    let size = decrypt_file(&args.file, &args.identity, &output)?;
    eprintln!(
        "{}: {} decrypted",
        output.display(),
        bytesize::ByteSize(size).display().iec()
    );
    Ok(ExitStatus::Success)
}
