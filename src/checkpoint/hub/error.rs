//! What can go wrong reading a checkpoint from the Hugging Face Hub. Each says what was asked
//! (the repository, the revision, the request) and what to do about it where a person can.

use thiserror::Error;

use crate::error::{quoted, ErrorKind};

/// How a token can be given, for the messages that need one.
const HOW_TO_PASS_A_TOKEN: &str =
    "pass token=\"hf_...\", set HF_TOKEN, or log in with `hf auth login`";

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum HubError {
    #[error("{} is not a Hub repository id ('org/name', 'hf://org/name' or 'hf://org/name@revision'): {reason}", quoted(.text))]
    BadRepoId { text: String, reason: &'static str },

    /// `local`: the text was also tried as a local path, which does not exist.
    #[error("{}repository {} not found on the Hub ({endpoint}); if it is private, {HOW_TO_PASS_A_TOKEN}", local_too(.local), quoted(.repo))]
    RepoNotFound {
        repo: String,
        endpoint: String,
        local: Option<String>,
    },

    #[error("revision {} not found in repository {} (a branch, a tag or a commit)", quoted(.revision), quoted(.repo))]
    RevisionNotFound { repo: String, revision: String },

    #[error("repository {} is gated: accept its conditions on {endpoint}/{repo}, then {}", quoted(.repo), token_advice(*.had_token))]
    Gated {
        repo: String,
        endpoint: String,
        had_token: bool,
    },

    #[error("{request} was refused ({status}): {}", token_advice(*.had_token))]
    Denied {
        request: String,
        status: u16,
        had_token: bool,
    },

    #[error("repository {} at commit {commit} has no safetensors weights (it has: {formats}); only safetensors headers can be read without downloading the weights", quoted(.repo))]
    NoSafetensors {
        repo: String,
        commit: String,
        formats: String,
    },

    #[error("{request}: the server ignored the byte range and answered with the whole file ({status}); refusing to download it")]
    IgnoresRange { request: String, status: u16 },

    #[error("{request} failed after {tries} {}: {cause}", if *.tries == 1 { "try" } else { "tries" })]
    Network {
        request: String,
        tries: u32,
        cause: String,
    },

    #[error("{request}: unexpected answer: {reason}")]
    BadResponse { request: String, reason: String },

    #[error("HF_HUB_OFFLINE is set and {} is not cached (looked in {looked})", quoted(.what))]
    Offline { what: String, looked: String },

    /// A bare `org/name` that is no local path, and whose reading from the Hub failed.
    #[error("no local path {}, and reading it from the Hub failed: {error}", quoted(.text))]
    NeitherLocalNorHub { text: String, error: Box<HubError> },

    #[error("{name} must be {expected}, got {}", quoted(.value))]
    BadSetting {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
}

fn local_too(local: &Option<String>) -> String {
    match local {
        Some(path) => format!("no local path {} and ", quoted(path)),
        None => String::new(),
    }
}

fn token_advice(had_token: bool) -> String {
    if had_token {
        "the token given has no access to it (check its permissions, or HF_TOKEN)".to_owned()
    } else {
        format!("it needs a token: {HOW_TO_PASS_A_TOKEN}")
    }
}

impl HubError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            HubError::NeitherLocalNorHub { error, .. } => error.kind(),
            HubError::IgnoresRange { .. }
            | HubError::Network { .. }
            | HubError::BadResponse { .. } => ErrorKind::Runtime,
            _ => ErrorKind::Value,
        }
    }
}
