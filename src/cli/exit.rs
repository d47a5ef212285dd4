//! Exit codes: the one table ([`table!`], printed at the end of `claudedl --help`), the
//! status each code stands for ([`ExitStatus::code`]), and the mapping from typed errors (the
//! first recognised cause in an error's chain) and from runs of several items.

use std::error::Error;
use std::process::ExitCode;

use claudedl::api::ApiError;
use claudedl::engine::TransferError;
use claudedl::http::HttpError;
use claudedl::sync::SyncError;

/// The table above as a string literal (for `concat!` in the top-level `--help`).
macro_rules! table {
    () => {
        "Exit codes:
  0    success
  1    some items failed (or another failure)
  2    usage error (flags, arguments, config file)
  3    authentication or permission (no key, 401, 403)
  4    not found or expired (404, 410)
  5    spend limit reached: requests halted
  6    network unreachable (DNS, connection refused, connect timeout)
  7    TLS certificate rejected (never retried)
  130  interrupted (Ctrl-C; progress saved)"
    };
}
pub(crate) use table;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Success,
    Failure,
    Usage,
    Auth,
    NotFound,
    Halted,
    Network,
    Certificate,
    Interrupted,
}

impl ExitStatus {
    /// Every status, in the order of the table.
    #[cfg(test)]
    const ALL: [ExitStatus; 9] = [
        ExitStatus::Success,
        ExitStatus::Failure,
        ExitStatus::Usage,
        ExitStatus::Auth,
        ExitStatus::NotFound,
        ExitStatus::Halted,
        ExitStatus::Network,
        ExitStatus::Certificate,
        ExitStatus::Interrupted,
    ];

    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::Failure => 1,
            ExitStatus::Usage => 2,
            ExitStatus::Auth => 3,
            ExitStatus::NotFound => 4,
            ExitStatus::Halted => 5,
            ExitStatus::Network => 6,
            ExitStatus::Certificate => 7,
            ExitStatus::Interrupted => 130,
        }
    }

    /// The status of a run of several items, from the status of each failed one and whether
    /// any succeeded: interrupted and halted runs say so; a run where every item failed the
    /// same way says how; any other failure is "some items failed".
    pub fn of_items(failures: &[ExitStatus], any_succeeded: bool) -> ExitStatus {
        let Some(first) = failures.first() else {
            return ExitStatus::Success;
        };
        for overriding in [ExitStatus::Interrupted, ExitStatus::Halted] {
            if failures.contains(&overriding) {
                return overriding;
            }
        }
        if !any_succeeded && failures.iter().all(|f| f == first) {
            *first
        } else {
            ExitStatus::Failure
        }
    }

    /// The status an error ends the run with (its first recognised cause).
    pub fn of_error(error: &anyhow::Error) -> ExitStatus {
        error
            .chain()
            .find_map(of_cause)
            .unwrap_or(ExitStatus::Failure)
    }

    pub fn of_transfer(error: &TransferError) -> ExitStatus {
        of_transfer(error).unwrap_or(ExitStatus::Failure)
    }
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> ExitCode {
        ExitCode::from(status.code())
    }
}

/// A mistake in how the command was called (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn of_cause(cause: &(dyn Error + 'static)) -> Option<ExitStatus> {
    if cause.is::<UsageError>() {
        return Some(ExitStatus::Usage);
    }
    if let Some(error) = cause.downcast_ref::<SyncError>() {
        return match error {
            SyncError::Api(error) => of_api(error),
            SyncError::Transfer(error) => of_transfer(error),
            SyncError::PlaintextBesideEncrypted { .. } => Some(ExitStatus::Usage),
            _ => None,
        };
    }
    if let Some(error) = cause.downcast_ref::<ApiError>() {
        return of_api(error);
    }
    if let Some(error) = cause.downcast_ref::<TransferError>() {
        return of_transfer(error);
    }
    cause.downcast_ref::<HttpError>().and_then(of_http)
}

fn of_api(error: &ApiError) -> Option<ExitStatus> {
    match error {
        ApiError::MissingKey => Some(ExitStatus::Auth),
        ApiError::BadBaseUrl(_) | ApiError::BadId { .. } => Some(ExitStatus::Usage),
        ApiError::Api { status, .. } => of_status(*status),
        ApiError::Http(error) => of_http(error),
        ApiError::Cancelled => Some(ExitStatus::Interrupted),
        ApiError::RetriesExhausted { last, .. } => of_api(last),
        ApiError::Decode { .. } | ApiError::ListingLoop { .. } => None,
    }
}

fn of_transfer(error: &TransferError) -> Option<ExitStatus> {
    match error {
        TransferError::Status { status, .. } => of_status(*status),
        TransferError::Http(error) => of_http(error),
        TransferError::RetriesExhausted { last, .. } => of_transfer(last),
        TransferError::Cancelled { .. } => Some(ExitStatus::Interrupted),
        _ => None,
    }
}

fn of_http(error: &HttpError) -> Option<ExitStatus> {
    if error.is_certificate() {
        return Some(ExitStatus::Certificate);
    }
    match error {
        HttpError::Halted { .. } => Some(ExitStatus::Halted),
        HttpError::Send { source, .. } if source.is_connect() => Some(ExitStatus::Network),
        _ => None,
    }
}

fn of_status(status: u16) -> Option<ExitStatus> {
    match status {
        401 | 403 => Some(ExitStatus::Auth),
        404 | 410 => Some(ExitStatus::NotFound),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_of_items_is_partial_unless_all_failed_alike() {
        use ExitStatus::*;
        assert_eq!(ExitStatus::of_items(&[], true), Success);
        assert_eq!(ExitStatus::of_items(&[NotFound], false), NotFound);
        assert_eq!(ExitStatus::of_items(&[NotFound], true), Failure);
        assert_eq!(ExitStatus::of_items(&[NotFound, Auth], false), Failure);
        assert_eq!(ExitStatus::of_items(&[NotFound, Halted], true), Halted);
        assert_eq!(
            ExitStatus::of_items(&[Halted, Interrupted], false),
            Interrupted
        );
    }

    #[test]
    fn the_table_for_help_lists_every_code() {
        for status in ExitStatus::ALL {
            let line = format!("\n  {:<4} ", status.code());
            assert!(table!().contains(&line), "{line:?}");
        }
    }
}
