//! Hub repository ids and revisions: `"org/name"` (when no such local path exists),
//! `"hf://org/name"` and `"hf://org/name@revision"`, and the URLs built from them.

use super::error::HubError;

/// The scheme of an explicit Hub source.
pub const SCHEME: &str = "hf://";
/// The branch read when no revision is given.
pub const DEFAULT_REVISION: &str = "main";

/// Endings of a bare `org/name` read as a local file rather than a Hub repository.
const FILE_ENDINGS: [&str; 5] = [".safetensors", ".json", ".bin", ".pt", ".gguf"];

/// A model repository on the Hub, and the revision asked for (a branch, a tag or a commit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repo {
    pub id: String,
    pub revision: String,
}

impl Repo {
    /// `hf://org/name[@revision]`, or a bare `org/name` when `bare` is allowed. `Ok(None)`:
    /// the text does not look like a Hub source (then it is a local path).
    pub fn parse(text: &str, bare: bool) -> Result<Option<Repo>, HubError> {
        let bad = |reason| HubError::BadRepoId {
            text: text.to_owned(),
            reason,
        };
        let (rest, explicit) = match text.strip_prefix(SCHEME) {
            Some(rest) => (rest, true),
            None if bare => (text, false),
            None => return Ok(None),
        };
        let (id, revision) = match rest.split_once('@') {
            Some((id, revision)) if explicit => (id, revision),
            Some(_) => return Ok(None),
            None => (rest, DEFAULT_REVISION),
        };
        let id = id.trim_end_matches('/');
        // A bare name that ends like a file is a mistyped local path, not a repository.
        if !explicit && FILE_ENDINGS.iter().any(|ending| id.ends_with(ending)) {
            return Ok(None);
        }
        if let Err(reason) = check_id(id, explicit) {
            return if explicit { Err(bad(reason)) } else { Ok(None) };
        }
        if revision.is_empty() {
            return Err(bad("the revision after '@' is empty"));
        }
        if revision.chars().any(|c| c.is_control() || c == ' ') {
            return Err(bad("the revision holds a space or a control character"));
        }
        // A revision names a file under huggingface_hub's `refs/` (`refs/pr/1`): no part of it
        // may step out of that folder.
        if revision.starts_with('/') || revision.split('/').any(|part| part == ".." || part == ".")
        {
            return Err(bad(
                "the revision may not hold '.' or '..' parts or start with '/'",
            ));
        }
        Ok(Some(Repo {
            id: id.to_owned(),
            revision: revision.to_owned(),
        }))
    }

    /// `hf://org/name@revision`.
    pub fn show(&self, revision: &str) -> String {
        format!("{SCHEME}{}@{revision}", self.id)
    }

    /// The folder name huggingface_hub gives this repository in its cache.
    pub fn folder(&self) -> String {
        format!("models--{}", self.id.replace('/', "--"))
    }
}

/// Whether `revision` is a full commit hash (then it never moves, and needs no resolving).
pub fn is_commit(revision: &str) -> bool {
    revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The Hub's rules for a repository id (`[org/]name`, each part of letters, digits, `-`,
/// `_`, `.`, at most 96 characters, no `--` or `..`, not starting or ending with `-` or `.`).
/// A bare id must have the org: a bare `name` is a local path.
fn check_id(id: &str, explicit: bool) -> Result<(), &'static str> {
    let parts: Vec<&str> = id.split('/').collect();
    if parts.len() > 2 || (!explicit && parts.len() != 2) {
        return Err("a repository id is 'org/name'");
    }
    for part in parts {
        if part.is_empty() || part.len() > 96 {
            return Err("each part of the id has 1 to 96 characters");
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if !part.chars().all(allowed) {
            return Err("the id may hold only letters, digits, '-', '_' and '.'");
        }
        if part.contains("--") || part.contains("..") {
            return Err("the id may not hold '--' or '..'");
        }
        if part.starts_with(['-', '.']) || part.ends_with(['-', '.']) {
            return Err("a part of the id may not start or end with '-' or '.'");
        }
    }
    Ok(())
}

/// `text` with everything but unreserved characters percent-encoded (`/` too when `slash`).
pub fn encode(text: &str, slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (b == b'/' && !slash)
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str, bare: bool) -> Option<(String, String)> {
        Repo::parse(text, bare)
            .unwrap()
            .map(|repo| (repo.id, repo.revision))
    }

    #[test]
    fn forms() {
        let main = |id: &str| Some((id.to_owned(), "main".to_owned()));
        assert_eq!(parsed("org/name", true), main("org/name"));
        assert_eq!(parsed("org/name", false), None);
        assert_eq!(parsed("hf://org/name", false), main("org/name"));
        assert_eq!(parsed("hf://gpt2", false), main("gpt2"));
        assert_eq!(
            parsed("hf://org/name@refs/pr/1", false),
            Some(("org/name".to_owned(), "refs/pr/1".to_owned()))
        );
        for local in [
            "name",
            "a/b/c",
            "./x/y",
            "x/y.safetensors@",
            "/abs/path",
            "d/m.safetensors",
        ] {
            assert_eq!(parsed(local, true), None, "{local}");
        }
        for bad in [
            "hf://",
            "hf://a/b/c",
            "hf://a--b/c",
            "hf://org/name@",
            "hf://-x/y",
        ] {
            assert!(Repo::parse(bad, true).is_err(), "{bad}");
        }
    }

    #[test]
    fn encoding_and_commits() {
        assert_eq!(encode("refs/pr/1", true), "refs%2Fpr%2F1");
        assert_eq!(encode("a b/c.json", false), "a%20b/c.json");
        assert!(is_commit(&"a".repeat(40)));
        assert!(!is_commit("main"));
    }
}
