//! The one error type of the core. Each variant knows which Python exception it becomes
//! (`kind`); the binding layer maps kinds to exceptions in one place (`bindings/errors.rs`).

use thiserror::Error;

/// Which Python exception an [`Error`] becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    Value,
    Type,
    Key,
}

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum Error {
    #[error("Unknown device type string '{text}'{hint}")]
    UnknownDeviceType { text: String, hint: Hint },

    #[error("Device id must be an integer, got {part}")]
    BadId { part: String },

    #[error("Device id must be >= 0, got {id}")]
    NegativeId { id: String },

    #[error("Device id {part} is too large (at most {max})", max = u64::MAX)]
    IdTooLarge { part: String },

    #[error("Device string '{text}' has more than one ':'; expected '<type>' or '<type>:<id>'")]
    TooManyColons { text: String },

    #[error("The disk device can only be used as a part of device maps")]
    DiskAsSingle,

    #[error("The component device can neither be empty nor contain both a single device and a device map")]
    InvalidComponent,

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

    #[error("Unknown component device type '{text}' in serialized data")]
    UnknownComponentType { text: String },

    /// An error about one entry of a map: says which key (and, through `source`, which value).
    #[error("{source} (key '{key}')")]
    Entry { key: String, source: Box<Error> },

    /// A checkpoint file (or index) that cannot be read as safetensors, naming the tensor.
    #[error("{file}: {}{message}", tensor.as_ref().map(|t| format!("tensor '{t}': ")).unwrap_or_default())]
    Checkpoint {
        file: String,
        tensor: Option<String>,
        message: String,
    },

    /// A bad argument or an impossible plan, with its whole message.
    #[error("{0}")]
    Invalid(String),

    /// A type error raised while converting Python values, carried through the core unchanged.
    #[error("{0}")]
    Type(String),

    #[error("{0}")]
    Key(String),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Entry { source, .. } => source.kind(),
            Error::Type(_) => ErrorKind::Type,
            Error::Key(_) => ErrorKind::Key,
            _ => ErrorKind::Value,
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
