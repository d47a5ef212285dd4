//! The Claude API: typed endpoints for Files and Message Batches, and the API error type.
//!
//! Every request carries `x-api-key` (marked sensitive, never logged), `anthropic-version` and
//! an honest `user-agent`. JSON calls are retried like transfers (429 honouring `retry-after`,
//! 5xx, 529, connection failures); content downloads go through the [`crate::engine`]. Lists
//! are walked through [`Pages`], which stops a listing whose cursor loops.

mod client;
mod error;
mod pages;
mod types;

pub use client::{ApiClient, ApiConfig, ApiKey, Cursor, FILES_BETA, Pagination};
pub use error::ApiError;
pub use pages::{Listed, Loop, Pages};
pub use types::{Batch, FileObject, Page, RequestCounts, check_id};

/// The public API's base URL.
pub const DEFAULT_BASE_URL: &str = crate::config::defaults::BASE_URL;
/// The API version every request names.
pub const API_VERSION: &str = "2023-06-01";
