//! The one error type of the core. Each variant knows which Python exception it becomes
//! (`kind`); the binding layer maps kinds to exceptions in one place (`bindings/errors.rs`).

use thiserror::Error;

/// Which Python exception an [`Error`] becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    Value,
    Type,
    Key,
    Runtime,
    Overflow,
}

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum Error {
    #[error("Unknown device type string {}{hint}", quoted(.text))]
    UnknownDeviceType { text: String, hint: Hint },

    #[error("Device id must be an integer, got {}", quoted(.part))]
    BadId { part: String },

    #[error("Device id must be >= 0, got {}", clipped(.id))]
    NegativeId { id: String },

    #[error("Device id {} is too large (at most {max})", clipped(.part), max = u64::MAX)]
    IdTooLarge { part: String },

    #[error("Device string {} has more than one ':'; expected '<type>' or '<type>:<id>'", quoted(.text))]
    TooManyColons { text: String },

    #[error("The disk device can only be used as a part of device maps")]
    DiskAsSingle,

    #[error("The component device can neither be empty nor contain both a single device and a device map")]
    InvalidComponent,

    /// `ComponentDevice.resolve_device` of something else; `type_name` is its type's name.
    #[error(
        "Invalid component device type '{type_name}'. Must either be None or ComponentDevice."
    )]
    NotAComponent { type_name: String },

    #[error("Only single devices can be converted to {target} format")]
    NotSingle { target: &'static str },

    #[error(
        "No usable device found in the device map; disk devices cannot be used as a single device"
    )]
    NoUsableDevice,

    #[error("{what} needs a GPU id, but the device is '{device}' (write it as 'cuda:<id>')")]
    GpuWithoutId { what: String, device: String },

    #[error("Device id {id} is out of range for PyTorch, whose device index is at most {max}", max = i8::MAX)]
    IdTooLargeForTorch { id: u64 },

    /// `text` is `str()` of any Python value, quoted as Haystack quotes it.
    #[error("Unknown component device type '{}' in serialized data", clipped(.text))]
    UnknownComponentType { text: String },

    /// A value of a HuggingFace device map that is no GPU id, device string or `torch.device`;
    /// `value` is its `str()`, cut for the message by the binding (Haystack's message).
    #[error("Couldn't convert HuggingFace device map - unexpected device '{value}' for '{}'", clipped(.key))]
    UnexpectedHfDevice { value: String, key: String },

    /// An error about one entry of a map: says which key (and, through `source`, which value).
    #[error("{source} (key {})", quoted(.key))]
    Entry { key: String, source: Box<Error> },

    /// An error of the lookup and its reports (`crate::lookup`).
    #[error(transparent)]
    Lookup(#[from] crate::lookup::LookupError),

    /// An error about one item of a sequence: says which position.
    #[error("{source} (at position {position})")]
    Position { position: usize, source: Box<Error> },
    /// A checkpoint that cannot be read (see `checkpoint::CheckpointError`).
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),

    #[error("Unknown dtype '{text}'; expected a torch name ('bfloat16', 'float16', 'float32', 'float8_e4m3fn', 'int8', ...), a safetensors name ('BF16', 'F8_E4M3', ...) or a short name ('bf16', 'fp16', 'fp32', 'fp8', 'fp8_e5m2')")]
    UnknownDtype { text: String },

    #[error("dtype '{text}' is not a floating-point dtype: loading converts only floating-point tensors, to a floating-point dtype such as 'bfloat16'")]
    NotAFloatDtype { text: String },

    #[error("Unknown example model '{name}'; expected one of {}", crate::examples::NAMES.map(|n| format!("'{n}'")).join(", "))]
    UnknownExample { name: String },

    /// A type error raised while converting Python values, carried through the core unchanged.
    #[error("{0}")]
    Type(String),

    /// Text that is not Unicode (a Python `str` with a lone surrogate) cannot be stored.
    #[error("{what} {repr} is not valid Unicode: it holds a lone surrogate (U+{code:04X}) at index {index}")]
    Surrogate {
        what: &'static str,
        repr: String,
        code: u32,
        index: usize,
    },

    /// A mapping changed while it was read, which would make the result depend on timing.
    #[error("{what} changed size during iteration")]
    ChangedDuringIteration { what: &'static str },

    #[error("popitem(): DeviceMap is empty")]
    PopFromEmpty,

    /// A panic caught at the binding boundary (a bug): the operation, the panic's message and
    /// where it happened (`" at file:line"`, or empty).
    #[error("internal error in {operation}: {message}{location}; please report it (devicemap {})", env!("CARGO_PKG_VERSION"))]
    Panic {
        operation: String,
        message: String,
        location: String,
    },

    #[error("{what}: {got} values to unpack (expected 2, a (key, value) pair)")]
    NotAPair { what: &'static str, got: String },

    #[error("the mapping reports {len} entries, more than a DeviceMap can hold ({max})", max = MAX_ENTRIES)]
    TooManyEntries { len: usize },

    #[error("DeviceMap key of {len} bytes is longer than a DeviceMap can hold ({max} bytes)", max = u32::MAX)]
    KeyTooLong { len: usize },

    /// A check of devicemap's own work failed: a bug, never the caller's input.
    #[error("internal error: {0}; please report it at the devicemap issue tracker")]
    Internal(String),

    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),

    #[error(transparent)]
    Inference(#[from] crate::inference::InferenceError),
}

/// Entries a map can hold: positions are `u32`.
pub const MAX_ENTRIES: usize = u32::MAX as usize;

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Entry { source, .. } | Error::Position { source, .. } => source.kind(),
            Error::Lookup(err) => err.kind(),
            Error::Plan(err) => err.kind(),
            Error::Checkpoint(err) => err.kind(),
            Error::Type(_) => ErrorKind::Type,
            Error::PopFromEmpty => ErrorKind::Key,
            Error::UnexpectedHfDevice { .. } => ErrorKind::Type,
            Error::Panic { .. } => ErrorKind::Runtime,
            Error::ChangedDuringIteration { .. } | Error::Internal(_) => ErrorKind::Runtime,
            Error::TooManyEntries { .. } => ErrorKind::Overflow,
            Error::Inference(err) => err.kind(),
            _ => ErrorKind::Value,
        }
    }

    /// Attaches the position in a sequence an error is about.
    pub fn at_position(self, position: usize) -> Error {
        Error::Position {
            position,
            source: Box::new(self),
        }
    }

    /// Attaches the map key an error is about.
    pub fn for_key(self, key: &str) -> Error {
        Error::Entry {
            key: key.to_owned(),
            source: Box::new(self),
        }
    }
}

/// The optional "did you mean" suffix of an unknown device type.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Hint(pub Option<&'static str>);

impl std::fmt::Display for Hint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(value) => write!(f, "; did you mean '{value}'?"),
            None => Ok(()),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Characters of input text a message shows; the rest is summarised by its length, so a
/// 10 MB input makes a short message.
pub const SHOWN_CHARS: usize = 60;

/// Input text as Python's `repr` shows it (so `" 1"` reads `' 1'` and `""` reads `''`),
/// cut to [`SHOWN_CHARS`] characters.
pub fn quoted(text: &str) -> String {
    let (shown, total) = cut(text);
    let mut out = py_repr(shown);
    if let Some(total) = total {
        out.push_str(&format!("... ({total} characters)"));
    }
    out
}

/// Text already fit for a message (digits, a repr made by Python), cut to [`SHOWN_CHARS`].
pub fn clipped(text: &str) -> String {
    match cut(text) {
        (shown, Some(total)) => format!("{shown}... ({total} characters)"),
        (shown, None) => shown.to_owned(),
    }
}

/// The first [`SHOWN_CHARS`] characters, and the total count when there are more.
fn cut(text: &str) -> (&str, Option<usize>) {
    match text.char_indices().nth(SHOWN_CHARS) {
        Some((end, _)) => (&text[..end], Some(text.chars().count())),
        None => (text, None),
    }
}

/// Python's `repr` of a `str`: single quotes unless the text holds one and no double quote;
/// backslash escapes for the quote, backslash, `\t`, `\n`, `\r` and unprintable characters.
/// Printability follows Rust's table, which agrees with Python's except that a combining
/// mark is escaped here and printed by Python.
pub fn py_repr(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.escape_debug().next() != Some('\\') => out.push(c),
            c if (c as u32) <= 0xff => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repr_like_python() {
        assert_eq!(py_repr(" 1"), "' 1'");
        assert_eq!(py_repr(""), "''");
        assert_eq!(py_repr("a'b"), "\"a'b\"");
        assert_eq!(py_repr("a'b\""), "'a\\'b\"'");
        assert_eq!(py_repr("\n\t\\"), "'\\n\\t\\\\'");
        assert_eq!(
            py_repr("\u{0}\u{7f}\u{a0}é\u{200b}"),
            "'\\x00\\x7f\\xa0é\\u200b'"
        );
        assert_eq!(py_repr("\u{e0001}"), "'\\U000e0001'");
    }

    #[test]
    fn errors_the_bindings_raise() {
        let cases = [
            (
                Error::NotAComponent {
                    type_name: "str".to_owned(),
                },
                "Invalid component device type 'str'. Must either be None or ComponentDevice.",
                ErrorKind::Value,
            ),
            (
                Error::UnexpectedHfDevice {
                    value: "True".to_owned(),
                    key: "k".repeat(100),
                },
                "Couldn't convert HuggingFace device map - unexpected device 'True' for 'kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk... (100 characters)'",
                ErrorKind::Type,
            ),
            (
                Error::PopFromEmpty,
                "popitem(): DeviceMap is empty",
                ErrorKind::Key,
            ),
        ];
        for (err, message, kind) in cases {
            assert_eq!(err.to_string(), message);
            assert_eq!(err.kind(), kind);
        }
        let panic = Error::Panic {
            operation: "DeviceMap.update".to_owned(),
            message: "boom".to_owned(),
            location: " at src/map.rs:1".to_owned(),
        };
        assert_eq!(panic.kind(), ErrorKind::Runtime);
        assert!(panic
            .to_string()
            .starts_with("internal error in DeviceMap.update: boom at src/map.rs:1; please report it (devicemap "));
    }

    #[test]
    fn long_text_is_cut() {
        let long = "x".repeat(10_000_000);
        let shown = quoted(&long);
        assert!(shown.len() < 100, "{shown}");
        assert!(shown.ends_with("... (10000000 characters)"), "{shown}");
        assert_eq!(clipped("12345"), "12345");
    }
}
