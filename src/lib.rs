//! devicemap's Rust core. The modules at the top hold the logic and know nothing of Python;
//! `bindings` is the thin PyO3 layer that exposes them as `devicemap._core`. It exists only with
//! the `python` feature (on by default), so `cargo test --no-default-features` proves the core
//! builds and passes its tests without pyo3.

pub mod checkpoint;
pub mod component;
pub mod cuda;
pub mod device;
pub mod dtype;
pub mod error;
pub mod examples;
pub mod inference;
pub mod lookup;
pub mod map;
pub mod names;
pub mod parse;
pub mod plan;
pub mod units;

#[cfg(feature = "python")]
mod bindings;

#[cfg(feature = "python")]
pub use bindings::_core;

/// Rust's allocations (key text, entry tables) go to mimalloc, which keeps freed memory for
/// reuse: with the system allocator each large map build maps fresh pages from the kernel and
/// pays a page fault per page, which doubled the time of building a 47k-entry map.
///
/// Not under `cargo fuzz` (`cfg(fuzzing)`): the sanitizers and libFuzzer's leak and RSS checks
/// watch the system allocator, and would see nothing through mimalloc.
#[cfg(not(fuzzing))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
