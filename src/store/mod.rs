//! Storage: atomic file replacement, the preallocated `.part` file written in place, the set of
//! finished byte ranges and the resume state kept beside each `.part`.

pub mod atomic;
pub mod index;
pub mod layout;
pub mod meta;
pub mod names;
mod part;
pub mod ranges;
pub mod resume;

pub use part::{PartFile, PartLock, PartLockError};
pub use ranges::RangeSet;
pub use resume::{Installed, ResumeState, StatePaths};
