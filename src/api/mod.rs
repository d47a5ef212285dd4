//! The Claude API: typed endpoints for Files and Message Batches, and the API error type.
//!
//! Every request carries `x-api-key` (marked sensitive, never logged), `anthropic-version` and
//! an honest `user-agent`. JSON calls are retried like transfers (429 honouring `retry-after`,
//! 5xx, 529, connection failures); content downloads go through the [`crate::engine`].

mod client;
mod error;
mod types;

pub use client::{ApiClient, ApiConfig, ApiKey, Cursor, FILES_BETA, Pagination};
pub use error::ApiError;
pub use types::{Batch, FileObject, Page, RequestCounts, check_id};

/// The public API's base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
/// The API version every request names.
pub const API_VERSION: &str = "2023-06-01";
