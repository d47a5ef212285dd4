//! `claudedl decrypt FILE.age -i IDENTITY [-o OUT]`.

use std::path::PathBuf;

use anyhow::bail;
use claudedl::crypt::decrypt_file;

use super::args::DecryptArgs;
use super::common::{ExitStatus, UsageError};

pub fn run(args: DecryptArgs) -> anyhow::Result<ExitStatus> {
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
