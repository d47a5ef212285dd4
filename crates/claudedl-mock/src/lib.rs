pub mod api;
pub mod origin;
