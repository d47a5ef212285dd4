pub mod api;
mod http;
pub mod origin;
#[cfg(test)]
mod testing;
