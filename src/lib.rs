//! devicemap's Rust core. The modules at the top hold the logic and know nothing of Python;
//! `bindings` is the thin PyO3 layer that exposes them as `devicemap._core`.

pub mod component;
pub mod cuda;
pub mod device;
pub mod error;
pub mod examples;
pub mod map;
pub mod order;
pub mod parse;
pub mod plan;
pub mod safetensors;

mod bindings;

pub use bindings::_core;

/// Rust's allocations (key text, entry tables) go to mimalloc, which keeps freed memory for
/// reuse: with the system allocator each large map build maps fresh pages from the kernel and
/// pays a page fault per page, which doubled the time of building a 47k-entry map.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
