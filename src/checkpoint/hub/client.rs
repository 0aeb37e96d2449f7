//! HTTP to the Hub: one `ureq` agent (rustls with the system's certificates, proxies from the
//! environment, a pool of connections), the token only ever sent to the Hub's own origin,
//! redirects followed here (so `Range` is kept on the hop to the CDN and the token is not),
//! and a bounded retry of transient failures. Counts the requests made and the bytes read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ureq::tls::{RootCerts, TlsConfig};
use ureq::Agent;

use super::error::HubError;

/// Tries of one request when it fails in a way that may pass (a dropped connection, a
/// timeout, 429, 5xx).
pub const TRIES: u32 = 3;
/// Redirects followed for one request (the Hub makes one, to its CDN).
const MAX_HOPS: u32 = 5;
/// Waits before the second and third tries.
const BACKOFF: [Duration; 2] = [Duration::from_millis(200), Duration::from_millis(800)];

/// An answer: its status and the headers the reader uses, and its body (for a success).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// `X-Error-Code`: `RepoNotFound`, `RevisionNotFound`, `EntryNotFound`, `GatedRepo`.
    pub error_code: Option<String>,
    pub content_range: Option<String>,
    /// `X-Repo-Commit` of the first answer that had it (the Hub's, before any redirect): the
    /// commit the revision asked for is at.
    pub repo_commit: Option<String>,
    pub body: Vec<u8>,
}

pub struct Client {
    agent: Agent,
    /// The Hub's base URL (`HF_ENDPOINT`), without a trailing `/`.
    pub endpoint: String,
    pub token: Option<String>,
    requests: AtomicU64,
    bytes: AtomicU64,
}

/// `scheme://host[:port]` of an absolute URL.
fn origin(url: &str) -> &str {
    let after = url.find("://").map_or(0, |at| at + 3);
    let end = url[after..].find('/').map_or(url.len(), |at| after + at);
    &url[..end]
}

/// Where a redirect from `url` to `location` goes.
fn join(url: &str, location: &str) -> String {
    if location.contains("://") {
        location.to_owned()
    } else if location.starts_with('/') {
        format!("{}{location}", origin(url))
    } else {
        let folder = url.rfind('/').map_or(url, |at| &url[..=at]);
        format!("{folder}{location}")
    }
}

/// What a request is, as errors name it.
pub fn describe(url: &str, range: Option<(u64, u64)>) -> String {
    match range {
        Some((start, end)) => format!("GET {url} (bytes {start}-{end})"),
        None => format!("GET {url}"),
    }
}

enum Failure {
    /// Worth another try.
    Transient(String),
    Final(HubError),
}

impl Client {
    pub fn new(endpoint: &str, token: Option<String>, timeout: Duration, pool: usize) -> Client {
        let tls = TlsConfig::builder()
            .root_certs(RootCerts::PlatformVerifier)
            .build();
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .timeout_connect(Some(timeout))
            .timeout_recv_response(Some(timeout))
            .timeout_recv_body(Some(timeout * 6))
            .user_agent(concat!("devicemap/", env!("CARGO_PKG_VERSION"), "; ureq"))
            .tls_config(tls)
            .max_idle_connections(pool.max(1) * 2)
            .max_idle_connections_per_host(pool.max(1))
            .build()
            .into();
        Client {
            agent,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            token,
            requests: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    /// Round trips made so far (each redirect hop counts), and body bytes read.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    /// GETs `url` (bytes `start..=end` of it with `range`), following redirects, retrying
    /// transient failures. A success (2xx) comes with its body (at most `limit` bytes); any
    /// other status without it. A server that answers a range request with the whole file
    /// is refused before its body is read.
    pub fn get(&self, url: &str, range: Option<(u64, u64)>, limit: u64) -> Result<Reply, HubError> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self.exchange(url, range, limit) {
                Ok(reply) if reply.status == 429 || reply.status >= 500 => {
                    if tries >= TRIES {
                        return Err(HubError::Network {
                            request: describe(url, range),
                            tries,
                            cause: format!("the server answered {}", reply.status),
                        });
                    }
                }
                Ok(reply) => return Ok(reply),
                Err(Failure::Final(error)) => return Err(error),
                Err(Failure::Transient(cause)) if tries >= TRIES => {
                    return Err(HubError::Network {
                        request: describe(url, range),
                        tries,
                        cause,
                    })
                }
                Err(Failure::Transient(_)) => {}
            }
            std::thread::sleep(BACKOFF[(tries as usize - 1).min(BACKOFF.len() - 1)]);
        }
    }

    fn exchange(&self, url: &str, range: Option<(u64, u64)>, limit: u64) -> Result<Reply, Failure> {
        let hub = origin(&self.endpoint).to_owned();
        let mut at = url.to_owned();
        let mut repo_commit = None;
        for _ in 0..=MAX_HOPS {
            let mut request = self.agent.get(&at).header("Accept-Encoding", "identity");
            if let Some((start, end)) = range {
                request = request.header("Range", format!("bytes={start}-{end}"));
            }
            // The token goes to the Hub only: never to the CDN or another host a redirect
            // names.
            if let (Some(token), true) = (&self.token, origin(&at) == hub) {
                request = request.header("Authorization", format!("Bearer {token}"));
            }
            self.requests.fetch_add(1, Ordering::Relaxed);
            let mut response = request.call().map_err(transient_or_final(url, range))?;
            let status = response.status().as_u16();
            let header = |name: &str| {
                let value = response.headers().get(name)?;
                value.to_str().ok().map(str::to_owned)
            };
            repo_commit = repo_commit.or_else(|| header("x-repo-commit"));
            if (300..400).contains(&status) {
                if let Some(location) = header("location") {
                    at = join(&at, &location);
                    continue;
                }
            }
            let mut reply = Reply {
                status,
                error_code: header("x-error-code"),
                content_range: header("content-range"),
                repo_commit,
                body: Vec::new(),
            };
            if !(200..300).contains(&status) {
                return Ok(reply);
            }
            if range.is_some() && status != 206 {
                return Err(Failure::Final(HubError::IgnoresRange {
                    request: describe(url, range),
                    status,
                }));
            }
            reply.body = response
                .body_mut()
                .with_config()
                .limit(limit)
                .read_to_vec()
                .map_err(transient_or_final(url, range))?;
            self.bytes
                .fetch_add(reply.body.len() as u64, Ordering::Relaxed);
            return Ok(reply);
        }
        Err(Failure::Final(HubError::BadResponse {
            request: describe(url, range),
            reason: format!("more than {MAX_HOPS} redirects"),
        }))
    }
}

fn transient_or_final(
    url: &str,
    range: Option<(u64, u64)>,
) -> impl Fn(ureq::Error) -> Failure + '_ {
    move |error| match error {
        ureq::Error::Io(_)
        | ureq::Error::Timeout(_)
        | ureq::Error::ConnectionFailed
        | ureq::Error::HostNotFound
        | ureq::Error::Protocol(_)
        | ureq::Error::BodyStalled => Failure::Transient(error.to_string()),
        other => Failure::Final(HubError::Network {
            request: describe(url, range),
            tries: 1,
            cause: other.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_and_redirects() {
        assert_eq!(
            origin("https://huggingface.co/a/b"),
            "https://huggingface.co"
        );
        assert_eq!(origin("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(join("http://h:1/a/b", "/c"), "http://h:1/c");
        assert_eq!(join("http://h:1/a/b", "https://cdn/x?y"), "https://cdn/x?y");
        assert_eq!(join("http://h:1/a/b", "c"), "http://h:1/a/c");
    }
}
