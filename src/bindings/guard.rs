//! Panics stop at the binding boundary. Bad input must give a Python exception, never a panic;
//! a panic that escapes anyway is a bug, and pyo3 would raise it as `PanicException`, which
//! derives from `BaseException`, so `except Exception` in the caller's server loop misses it.
//! [`guard`] turns it into a `RuntimeError` that names the operation.

use std::any::Any;
use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

use pyo3::prelude::*;

use crate::error::Error;

/// Runs the body of the binding `operation` (`"DeviceMap.update"`); a panic in it becomes
/// `RuntimeError: internal error in DeviceMap.update: <panic message>; please report it`.
///
/// `AssertUnwindSafe`: the bodies guarded here change nothing shared that a panic could leave
/// half-changed (values are immutable; a map is built whole, then published).
#[inline]
pub fn guard<T>(operation: &str, body: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(result) => result,
        Err(payload) => Err(internal_error(operation, payload.as_ref())),
    }
}

#[cold]
fn internal_error(operation: &str, payload: &(dyn Any + Send)) -> PyErr {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message");
    let location = PANIC_LOCATION
        .with(|last| last.borrow_mut().take())
        .map(|at| format!(" at {at}"))
        .unwrap_or_default();
    Error::Panic {
        operation: operation.to_owned(),
        message: message.to_owned(),
        location,
    }
    .into()
}

thread_local! {
    /// Where this thread last panicked, for the message of the error [`guard`] raises.
    static PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Panics in this extension are reported through the exception, with their location, rather
/// than a message and backtrace on stderr. The hook is this extension's own (each extension
/// links its own copy of std), so other Rust extensions in the process keep theirs. With
/// `RUST_BACKTRACE` set, the previous hook runs too.
pub fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        let verbose = std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0");
        std::panic::set_hook(Box::new(move |info| {
            let at = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()));
            let _ = PANIC_LOCATION.try_with(|last| *last.borrow_mut() = at);
            if verbose {
                previous(info);
            }
        }));
    });
}

/// Panics on purpose under [`guard`], so a test can see what a caller gets from a bug.
/// Compiled only with the `testing` feature (scripts/test.sh installs with it).
#[cfg(feature = "testing")]
#[pyfunction]
pub fn _panic_for_tests(message: &str) -> PyResult<()> {
    guard("_panic_for_tests", || -> PyResult<()> {
        std::panic::panic_any(message.to_owned())
    })
}
