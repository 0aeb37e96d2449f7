//! devicemap's Rust core. The modules at the top hold the logic and know nothing of Python;
//! `bindings` is the thin PyO3 layer that exposes them as `devicemap._core`.

pub mod component;
pub mod cuda;
pub mod device;
pub mod error;
pub mod map;
pub mod parse;

mod bindings;

pub use bindings::_core;
