//! One client for XRPC and the JSON documents around it (DID documents): every answer is read
//! up to a stated size and within an overall deadline, and a refusal comes back as a typed
//! [`XrpcError`] with the server's `{error, message}` and [`XrpcError::is_retryable`].
//!
//! Invariants: no answer is read whole into memory before its size is known to fit (the body
//! is read chunk by chunk and refused past the limit); no call waits longer than its deadline
//! (a server that trickles a byte now and then is cut off); error bodies are capped too.

use std::time::Duration;

use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::time::Instant;

/// The largest JSON answer read by default (4 MiB: a `listRecords` page of large records).
pub const JSON_LIMIT: u64 = 4 << 20;
/// The largest DID document read (real ones are a few kilobytes).
pub const DID_DOC_LIMIT: u64 = 256 << 10;
/// The largest error answer read (its `message` is shown to the person, shortened).
const ERROR_LIMIT: u64 = 64 << 10;
/// How long one JSON call may take, from sending to the last byte.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// How long a large download (a repository's CAR, a blob) may take: a floor, plus the time its
/// bytes take at the slowest rate accepted. The bytes counted are the larger of what the
/// server announced and what it has sent, so a server that trickles is cut off, and one that
/// announces nothing still has to keep up the rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub floor: Duration,
    /// Bytes per second.
    pub min_rate: u64,
}

impl Default for Transfer {
    /// A minute, plus 32 KiB/s (a 100 MB repository may take about 53 minutes).
    fn default() -> Self {
        Transfer {
            floor: Duration::from_secs(60),
            min_rate: 32 << 10,
        }
    }
}

impl Transfer {
    /// The time allowed for `bytes`.
    pub fn allowed(&self, bytes: u64) -> Duration {
        self.floor + Duration::from_secs(bytes / self.min_rate.max(1))
    }

    /// The next chunk of a download that started at `start`, announced `announced` bytes and
    /// has sent `received`; a timeout once the time allowed is over.
    pub async fn next_chunk<S, B, E>(
        &self,
        stream: &mut S,
        url: &str,
        start: Instant,
        announced: Option<u64>,
        received: u64,
    ) -> Result<Option<B>, XrpcError>
    where
        S: futures_util::Stream<Item = Result<B, E>> + Unpin,
        E: std::fmt::Display,
    {
        let allowed = self.allowed(announced.unwrap_or(0).max(received));
        match tokio::time::timeout_at(start + allowed, stream.next()).await {
            Err(_) => Err(XrpcError::Timeout {
                url: url.to_string(),
                secs: allowed.as_secs(),
            }),
            Ok(None) => Ok(None),
            Ok(Some(Ok(chunk))) => Ok(Some(chunk)),
            Ok(Some(Err(e))) => Err(XrpcError::Network {
                url: url.to_string(),
                reason: e.to_string(),
            }),
        }
    }
}

/// Why an XRPC call (or a document fetch) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XrpcError {
    #[error("could not reach {url}: {reason}")]
    Network { url: String, reason: String },
    #[error("{url} did not answer within {secs} seconds")]
    Timeout { url: String, secs: u64 },
    #[error("{url} sent more than {limit} bytes, more than such an answer ever needs: refused")]
    TooLarge { url: String, limit: u64 },
    #[error("{url} answered {status} {error}: {message}")]
    Status {
        url: String,
        status: u16,
        /// The XRPC error name (`RepoNotFound`, …), empty when the body had none.
        error: String,
        message: String,
    },
    #[error("{url} sent an answer that is not what was asked for: {reason}")]
    Decode { url: String, reason: String },
    #[error("{url} lists without end ({reason}): the listing was stopped")]
    Endless { url: String, reason: String },
}

impl XrpcError {
    /// Worth trying again later: the network, a deadline, a busy or failing server.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Network { .. } | Self::Timeout { .. } => true,
            Self::Status { status, .. } => *status == 429 || (*status >= 500 && *status != 501),
            Self::TooLarge { .. } | Self::Decode { .. } | Self::Endless { .. } => false,
        }
    }

    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The XRPC error name of a refusal (`RepoNotFound`, `AuthRequired`, …).
    pub fn error_name(&self) -> Option<&str> {
        match self {
            Self::Status { error, .. } if !error.is_empty() => Some(error),
            _ => None,
        }
    }
}

/// Keeps a cursor loop finite: the listing ends at a page without a cursor or without items,
/// and is refused at a cursor seen before or past a number of pages.
#[derive(Debug)]
pub struct Pages {
    url: String,
    seen: std::collections::HashSet<String>,
    pages: usize,
    max_pages: usize,
}

impl Pages {
    pub fn new(url: &str, max_pages: usize) -> Self {
        Pages {
            url: url.to_string(),
            seen: std::collections::HashSet::new(),
            pages: 0,
            max_pages,
        }
    }

    /// After a page of `items` with `cursor`: the cursor to ask for next, `None` when the
    /// listing is complete.
    pub fn next(
        &mut self,
        cursor: Option<String>,
        items: usize,
    ) -> Result<Option<String>, XrpcError> {
        self.pages += 1;
        let endless = |reason: String| XrpcError::Endless {
            url: self.url.clone(),
            reason,
        };
        let Some(cursor) = cursor.filter(|_| items > 0) else {
            return Ok(None);
        };
        if self.pages >= self.max_pages {
            return Err(endless(format!("more than {} pages", self.max_pages)));
        }
        if !self.seen.insert(cursor.clone()) {
            return Err(endless(format!("the cursor {cursor:?} came back")));
        }
        Ok(Some(cursor))
    }
}

/// Reads a body up to `limit` bytes, all of it before `deadline`.
pub async fn read_capped(
    resp: reqwest::Response,
    url: &str,
    limit: u64,
    deadline: Instant,
) -> Result<Vec<u8>, XrpcError> {
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(XrpcError::TooLarge {
            url: url.to_string(),
            limit,
        });
    }
    let secs = deadline
        .saturating_duration_since(Instant::now())
        .as_secs()
        .max(1);
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .map_err(|_| XrpcError::Timeout {
                url: url.to_string(),
                secs,
            })?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| XrpcError::Network {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(XrpcError::TooLarge {
                url: url.to_string(),
                limit,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The XRPC error an unsuccessful answer carries (its body read up to a small limit).
pub async fn refusal(resp: reqwest::Response, url: &str, deadline: Instant) -> XrpcError {
    let status = resp.status().as_u16();
    let text = match read_capped(resp, url, ERROR_LIMIT, deadline).await {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => return e,
    };
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let field = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .chars()
            .take(500)
            .collect::<String>()
    };
    let message = if body.is_object() {
        field("message")
    } else {
        text.chars().take(300).collect()
    };
    XrpcError::Status {
        url: url.to_string(),
        status,
        error: field("error"),
        message,
    }
}

/// The client: one `reqwest::Client`, a size limit and a deadline for JSON answers.
#[derive(Clone, Debug)]
pub struct Client {
    pub http: reqwest::Client,
    pub limit: u64,
    pub deadline: Duration,
}

impl Client {
    pub fn new(http: reqwest::Client) -> Self {
        Client {
            http,
            limit: JSON_LIMIT,
            deadline: DEADLINE,
        }
    }

    /// Sends `req` (to `url`) within the deadline; an unsuccessful status is an error.
    pub async fn send(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
        deadline: Instant,
    ) -> Result<reqwest::Response, XrpcError> {
        let secs = self.deadline.as_secs();
        let resp = tokio::time::timeout_at(deadline, req.send())
            .await
            .map_err(|_| XrpcError::Timeout {
                url: url.to_string(),
                secs,
            })?
            .map_err(|e| XrpcError::Network {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        if !resp.status().is_success() {
            return Err(refusal(resp, url, deadline).await);
        }
        Ok(resp)
    }

    /// A JSON answer to `req`, read up to `limit` bytes; an empty body reads as `null`.
    pub async fn json<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
        limit: u64,
    ) -> Result<T, XrpcError> {
        let deadline = Instant::now() + self.deadline;
        let resp = self.send(req, url, deadline).await?;
        let body = read_capped(resp, url, limit, deadline).await?;
        let body: &[u8] = if body.is_empty() { b"null" } else { &body };
        serde_json::from_slice(body).map_err(|e| XrpcError::Decode {
            url: url.to_string(),
            reason: e.to_string(),
        })
    }

    /// A query (`GET {base}/xrpc/{nsid}`).
    pub async fn get<T: DeserializeOwned>(
        &self,
        base: &str,
        nsid: &str,
        query: &[(&str, &str)],
    ) -> Result<T, XrpcError> {
        let url = format!("{}/xrpc/{nsid}", base.trim_end_matches('/'));
        self.json(self.http.get(&url).query(query), &url, self.limit)
            .await
    }

    /// A JSON document at `url` (a DID document), read up to `limit` bytes.
    pub async fn document<T: DeserializeOwned>(
        &self,
        url: &str,
        limit: u64,
    ) -> Result<T, XrpcError> {
        self.json(self.http.get(url), url, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn status(status: u16) -> XrpcError {
        XrpcError::Status {
            url: "http://x".into(),
            status,
            error: "E".into(),
            message: String::new(),
        }
    }

    #[test]
    fn a_download_gets_a_floor_plus_its_size_at_the_slowest_rate() {
        let t = Transfer::default();
        assert_eq!(t.allowed(0), Duration::from_secs(60));
        assert_eq!(t.allowed(100 << 20), Duration::from_secs(60 + 3200));
        let strict = Transfer {
            floor: Duration::ZERO,
            min_rate: 0,
        };
        assert_eq!(
            strict.allowed(5),
            Duration::from_secs(5),
            "no division by zero"
        );
    }

    #[rstest]
    #[case::busy(status(429), true)]
    #[case::server_error(status(502), true)]
    #[case::not_implemented(status(501), false)]
    #[case::bad_request(status(400), false)]
    #[case::not_found(status(404), false)]
    #[case::network(XrpcError::Network { url: "u".into(), reason: "r".into() }, true)]
    #[case::timeout(XrpcError::Timeout { url: "u".into(), secs: 1 }, true)]
    #[case::too_large(XrpcError::TooLarge { url: "u".into(), limit: 1 }, false)]
    #[case::decode(XrpcError::Decode { url: "u".into(), reason: "r".into() }, false)]
    fn which_errors_are_worth_retrying(#[case] e: XrpcError, #[case] retry: bool) {
        assert_eq!(e.is_retryable(), retry);
    }

    /// A server on loopback that answers every connection with `answer`, then trickles
    /// `trickle` bytes one at a time, a second apart, then closes.
    async fn server(answer: Vec<u8>, trickle: usize) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(&answer).await;
                    for _ in 0..trickle {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        if s.write_all(b" ").await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        url
    }

    #[test]
    fn cursor_loops_end() {
        let mut p = Pages::new("http://x", 3);
        assert_eq!(p.next(Some("a".into()), 10), Ok(Some("a".into())));
        assert_eq!(p.next(Some("b".into()), 10), Ok(Some("b".into())));
        // An empty page with a cursor, or no cursor: done.
        assert_eq!(Pages::new("u", 3).next(Some("a".into()), 0), Ok(None));
        assert_eq!(Pages::new("u", 3).next(None, 5), Ok(None));
        // Past the page cap.
        let err = p.next(Some("c".into()), 10).unwrap_err();
        assert!(err.to_string().contains("more than 3 pages"), "{err}");
        // A cursor that comes back.
        let mut p = Pages::new("http://x", 100);
        p.next(Some("a".into()), 1).unwrap();
        let err = p.next(Some("a".into()), 1).unwrap_err();
        assert!(err.to_string().contains("came back"), "{err}");
        assert!(!err.is_retryable());
    }

    #[tokio::test]
    async fn a_body_past_the_limit_is_refused_as_it_streams() {
        // No Content-Length (the body ends when the connection closes): the limit is found
        // while reading.
        let mut answer =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n[\""
                .to_vec();
        answer.extend(std::iter::repeat_n(b'x', 4096));
        let url = server(answer, 0).await;
        let c = Client::new(reqwest::Client::new());
        let err = c.document::<Value>(&url, 512).await.unwrap_err();
        assert!(
            matches!(err, XrpcError::TooLarge { limit: 512, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("refused"), "{err}");
    }

    #[tokio::test]
    async fn an_announced_size_past_the_limit_is_refused_before_reading() {
        let url = server(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 524288000\r\n\r\n{".to_vec(),
            0,
        )
        .await;
        let c = Client::new(reqwest::Client::new());
        let err = c.document::<Value>(&url, DID_DOC_LIMIT).await.unwrap_err();
        assert!(matches!(err, XrpcError::TooLarge { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_trickling_server_is_cut_off_at_the_deadline() {
        // Headers at once, then one byte a second for a minute: each read is quick, the
        // whole never ends.
        let url = server(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                .to_vec(),
            60,
        )
        .await;
        let mut c = Client::new(reqwest::Client::new());
        c.deadline = Duration::from_secs(2);
        let err = c
            .get::<Value>(&url, "com.example.slow", &[])
            .await
            .unwrap_err();
        assert!(matches!(err, XrpcError::Timeout { .. }), "{err}");
        assert!(err.is_retryable());
    }

    #[tokio::test]
    async fn a_refusal_carries_the_xrpc_error_name() {
        let body = br#"{"error":"RepoNotFound","message":"no such repo!"}"#;
        let mut answer = format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        answer.extend_from_slice(body);
        let url = server(answer, 0).await;
        let c = Client::new(reqwest::Client::new());
        let err = c
            .get::<Value>(&url, "com.atproto.sync.getRepoStatus", &[])
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(400));
        assert_eq!(err.error_name(), Some("RepoNotFound"));
        assert!(err.to_string().contains("no such repo!"), "{err}");
        assert!(!err.is_retryable());
    }
}
