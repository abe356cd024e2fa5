//! Sending one body and classifying the answer.
//!
//! What to do next is decided here, from the status alone: 2xx delivered;
//! 408/429/5xx and connection errors retried (honouring `Retry-After`); any
//! other 4xx rejected, because sending the same body again cannot succeed.
//! A request that timed out once sent is told apart: the receiver may have
//! taken it. Error texts never carry the URL (it holds the `api_key`).

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use tokio::time::Instant;

use crate::config::{ContentType, SecretUrl, WebhookConfig, WebhookTarget};

#[derive(Debug, PartialEq)]
pub enum Outcome {
    Delivered {
        status: u16,
    },
    Retry {
        reason: String,
        /// None when no answer came (timeout, connection error).
        status: Option<u16>,
        after: Option<RetryAfter>,
        /// No answer came within the timeout once the request was sent:
        /// the receiver may or may not have it.
        timed_out: bool,
    },
    Rejected {
        status: u16,
        reason: String,
    },
}

pub enum Transport {
    Http {
        client: reqwest::Client,
        url: SecretUrl,
        content_type: ContentType,
        max_retry_after: Duration,
    },
    /// Prints each body as one line on stdout.
    Stdout,
}

/// Longest part of a receiver's answer kept in logs and dead letters.
const MAX_REASON_CHARS: usize = 300;

impl Transport {
    pub fn new(config: &WebhookConfig) -> Result<Transport, reqwest::Error> {
        Ok(match &config.target {
            WebhookTarget::Stdout => Transport::Stdout,
            WebhookTarget::Http(url) => Transport::Http {
                client: client(config)?,
                url: url.clone(),
                content_type: config.content_type,
                max_retry_after: config.max_retry_after,
            },
        })
    }

    /// Sends `body`, waiting at most `timeout` for the whole answer; with
    /// `not_after`, no byte of the request is written after that instant.
    pub async fn send(
        &self,
        body: &Bytes,
        timeout: Duration,
        not_after: Option<Instant>,
    ) -> Outcome {
        match self {
            Transport::Stdout => {
                let mut out = std::io::stdout().lock();
                let written = out
                    .write_all(body)
                    .and_then(|()| out.write_all(b"\n"))
                    .and_then(|()| out.flush());
                match written {
                    Ok(()) => Outcome::Delivered { status: 200 },
                    Err(e) => Outcome::Retry {
                        reason: format!("stdout: {e}"),
                        status: None,
                        after: None,
                        timed_out: false,
                    },
                }
            }
            Transport::Http {
                client,
                url,
                content_type,
                max_retry_after,
            } => {
                let body = match not_after {
                    None => reqwest::Body::from(body.clone()),
                    Some(not_after) => reqwest::Body::wrap(BodyUntil {
                        bytes: Some(body.clone()),
                        not_after,
                    }),
                };
                let response = client
                    .post(url.expose().clone())
                    .header(CONTENT_TYPE, content_type.header_value())
                    .header(ACCEPT, "application/json")
                    .timeout(timeout)
                    .body(body)
                    .send()
                    .await;
                match response {
                    Ok(response) => {
                        let status = response.status();
                        let retry_after =
                            retry_after(response.headers(), *max_retry_after, SystemTime::now());
                        // A receiver may echo the request, secret and all.
                        let text = url.scrub(&response.text().await.unwrap_or_default());
                        classify(status, retry_after, &text)
                    }
                    Err(e) => Outcome::Retry {
                        timed_out: e.is_timeout() && !e.is_connect(),
                        reason: url.scrub(&with_causes(&e.without_url())),
                        status: None,
                        after: None,
                    },
                }
            }
        }
    }
}

/// A webhook's HTTP client.
fn client(config: &WebhookConfig) -> Result<reqwest::Client, reqwest::Error> {
    // Trust is the system store (reqwest is built without bundled roots, so
    // removing a CA there takes effect) plus `ca_file`.
    let builder = config
        .extra_roots
        .iter()
        .fold(reqwest::Client::builder(), |builder, cert| {
            builder.add_root_certificate(cert.clone())
        })
        .user_agent(concat!("tailhook/", env!("CARGO_PKG_VERSION")));
    // A fleet's request must never reach the receiver after its deadline:
    // HTTP/2 sends the head before it asks for the body, which `BodyUntil`
    // holds back; HTTP/1.1 writes both together.
    if config.fleet {
        builder.http1_only()
    } else {
        builder
    }
    .build()
}

/// A body that is handed over only until `not_after`. hyper writes a request
/// from its connection's own task: a process paused (SIGSTOP) just after the
/// sender handed a request over runs that task first on resuming, before
/// the sender's task can see that its deadline has passed. Over HTTP/1.1,
/// hyper takes the bytes just before it writes the head and the body
/// together, so the check there keeps a late request off the wire (HTTP/2
/// sends the head first: a fleet's client speaks only HTTP/1.1).
struct BodyUntil {
    bytes: Option<Bytes>,
    not_after: Instant,
}

/// Why a request was not written: its time to leave had passed.
#[derive(Debug, thiserror::Error)]
#[error("not sent: the time this request could leave at had passed (was the process paused?)")]
struct TooLate;

impl http_body::Body for BodyUntil {
    type Data = Bytes;
    type Error = TooLate;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, TooLate>>> {
        let this = self.get_mut();
        let Some(bytes) = this.bytes.take() else {
            return Poll::Ready(None);
        };
        Poll::Ready(Some(if Instant::now() > this.not_after {
            Err(TooLate)
        } else {
            Ok(Frame::data(bytes))
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.bytes.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.bytes.as_ref().map_or(0, |b| b.len() as u64))
    }
}

/// An error and its causes, `: `-separated: reqwest's own text alone
/// ("error sending request") does not say that the connection was refused.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

fn classify(status: StatusCode, retry_after: Option<RetryAfter>, text: &str) -> Outcome {
    let reason = || {
        let text: String = text.trim().chars().take(MAX_REASON_CHARS).collect();
        if text.is_empty() {
            status.to_string()
        } else {
            format!("{status}: {text}")
        }
    };
    if status.is_success() {
        Outcome::Delivered {
            status: status.as_u16(),
        }
    } else if status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
    {
        Outcome::Retry {
            reason: reason(),
            status: Some(status.as_u16()),
            after: retry_after,
            timed_out: false,
        }
    } else {
        Outcome::Rejected {
            status: status.as_u16(),
            reason: reason(),
        }
    }
}

/// How long a receiver asked to wait before the next attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryAfter {
    /// The wait to honour, never above the webhook's `max_retry_after`.
    pub wait: Duration,
    /// What the receiver asked for, when it was more than the cap.
    pub capped_from: Option<Duration>,
}

/// `Retry-After` (seconds or an HTTP date) at `now`, capped to `cap`; `None`
/// when absent or not understood, so the usual backoff applies.
fn retry_after(headers: &HeaderMap, cap: Duration, now: SystemTime) -> Option<RetryAfter> {
    parse_retry_after(headers.get(RETRY_AFTER)?.as_bytes(), cap, now)
}

fn parse_retry_after(value: &[u8], cap: Duration, now: SystemTime) -> Option<RetryAfter> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let asked = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More seconds than a u64 holds is no less a "very long" wait.
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        // A date in the past means "now".
        httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
    };
    Some(if asked <= cap {
        RetryAfter {
            wait: asked,
            capped_from: None,
        }
    } else {
        RetryAfter {
            wait: cap,
            capped_from: Some(asked),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_says_so_without_the_key() {
        // Nothing listens on a port bound and released just before.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let transport = transport_to(port);
        let Outcome::Retry {
            reason,
            status,
            timed_out: false,
            ..
        } = transport
            .send(&Bytes::from_static(b"{}"), Duration::from_secs(5), None)
            .await
        else {
            panic!("a refused connection is retried, known not to have arrived");
        };
        assert_eq!(status, None);
        assert!(reason.contains("Connection refused"), "{reason}");
        assert!(!reason.contains("hunter22"), "{reason}");
    }

    #[tokio::test]
    async fn a_request_sent_but_not_answered_in_time_is_a_timed_out_retry() {
        // Accepts and reads, never answers: the request went out.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let silent = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut sink = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut socket, &mut sink).await;
        });
        let transport = transport_to(port);
        let outcome = transport
            .send(&Bytes::from_static(b"{}"), Duration::from_millis(200), None)
            .await;
        let Outcome::Retry {
            reason,
            status: None,
            timed_out: true,
            ..
        } = outcome
        else {
            panic!("a timeout after sending is a retry of unknown outcome: {outcome:?}");
        };
        assert!(!reason.contains("hunter22"), "{reason}");
        silent.abort();
    }

    /// A receiver that answers 202 to one request; the bytes it read.
    async fn answering_once() -> (u16, tokio::task::JoinHandle<Vec<u8>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let read = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut chunk = [0; 4096];
            loop {
                let n = socket.read(&mut chunk).await.unwrap_or(0);
                got.extend_from_slice(&chunk[..n]);
                if n == 0 || got.ends_with(b"{}") {
                    break;
                }
            }
            let _ = socket
                .write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")
                .await;
            got
        });
        (port, read)
    }

    fn transport_to(port: u16) -> Transport {
        Transport::Http {
            client: reqwest::Client::new(),
            url: SecretUrl::parse(&format!("http://127.0.0.1:{port}/x?api_key=hunter22")).unwrap(),
            content_type: ContentType::Json,
            max_retry_after: Duration::from_secs(3600),
        }
    }

    #[tokio::test]
    async fn a_request_past_its_time_to_leave_is_never_written() {
        let (port, read) = answering_once().await;
        let late = Instant::now() - Duration::from_millis(1);
        let outcome = transport_to(port)
            .send(
                &Bytes::from_static(b"{}"),
                Duration::from_secs(5),
                Some(late),
            )
            .await;
        let Outcome::Retry {
            reason,
            status: None,
            timed_out: false,
            ..
        } = outcome
        else {
            panic!("a request kept off the wire is known not to have arrived: {outcome:?}");
        };
        assert!(reason.contains("had passed"), "{reason}");
        assert!(!reason.contains("hunter22"), "{reason}");
        // Not even the head: the connection closed with nothing on it.
        assert_eq!(read.await.unwrap(), b"");
    }

    #[tokio::test]
    async fn a_request_in_time_goes_whole_with_its_length() {
        let (port, read) = answering_once().await;
        let outcome = transport_to(port)
            .send(
                &Bytes::from_static(b"{}"),
                Duration::from_secs(5),
                Some(Instant::now() + Duration::from_secs(5)),
            )
            .await;
        assert_eq!(outcome, Outcome::Delivered { status: 202 });
        let request = String::from_utf8(read.await.unwrap())
            .unwrap()
            .to_lowercase();
        // A receiver may refuse a chunked body: the length is known.
        assert!(request.contains("content-length: 2\r\n"), "{request}");
        assert!(!request.contains("chunked"), "{request}");
        assert!(request.ends_with("\r\n\r\n{}"), "{request}");
    }

    /// The application protocols that a client built for webhook `soc`
    /// with `settings` offers in its TLS hello.
    async fn protocols_offered(settings: &str) -> Vec<Vec<u8>> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("https://127.0.0.1:{port}/x?api_key=k");
        let config = crate::deliver::tests::soc_config(dir.path(), &url, settings);
        let transport = Transport::new(&config).unwrap();
        let hello = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let acceptor = tokio_rustls::LazyConfigAcceptor::new(
                tokio_rustls::rustls::server::Acceptor::default(),
                socket,
            );
            let start = acceptor.await.unwrap();
            start
                .client_hello()
                .alpn()
                .into_iter()
                .flatten()
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>()
        });
        // The handshake goes no further: the request fails, as it may.
        transport
            .send(&Bytes::from_static(b"{}"), Duration::from_secs(5), None)
            .await;
        hello.await.unwrap()
    }

    #[tokio::test]
    async fn a_fleet_webhook_speaks_only_http_1_1() {
        // HTTP/2 would send a late request's head before `BodyUntil` is
        // asked for its bytes.
        let own = protocols_offered("").await;
        assert!(own.contains(&b"h2".to_vec()), "{own:?}");
        let shared =
            protocols_offered("fleet = true\n[fleet]\nredis_url = \"redis://127.0.0.1:1\"").await;
        assert!(!shared.contains(&b"h2".to_vec()), "{shared:?}");
        assert!(shared.contains(&b"http/1.1".to_vec()), "{shared:?}");
    }

    #[test]
    fn statuses_are_classified() {
        assert_eq!(
            classify(StatusCode::ACCEPTED, None, ""),
            Outcome::Delivered { status: 202 }
        );
        for retryable in [408, 429, 500, 502, 503] {
            let outcome = classify(StatusCode::from_u16(retryable).unwrap(), None, "");
            assert!(
                matches!(outcome, Outcome::Retry { .. }),
                "{retryable}: {outcome:?}"
            );
        }
        for rejected in [400, 401, 403, 404, 413, 415] {
            let outcome = classify(StatusCode::from_u16(rejected).unwrap(), None, "nope");
            assert!(
                matches!(outcome, Outcome::Rejected { status, .. } if status == rejected),
                "{outcome:?}"
            );
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    fn wait(value: &str, now: SystemTime) -> Option<RetryAfter> {
        parse_retry_after(value.as_bytes(), HOUR, now)
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = SystemTime::now();
        let plain = |secs| RetryAfter {
            wait: Duration::from_secs(secs),
            capped_from: None,
        };
        assert_eq!(wait(" 7 ", now), Some(plain(7)));
        let later = now + Duration::from_secs(120);
        let at = wait(&httpdate::fmt_http_date(later), now).unwrap();
        assert!(
            at.wait > Duration::from_secs(100) && at.wait <= Duration::from_secs(120),
            "{at:?}"
        );
        assert_eq!(wait("Wed, 21 Oct 2015 07:28:00 GMT", now), Some(plain(0)));
        for garbage in ["soon", "", "-5", "1.5", "7 s", "0x10"] {
            assert_eq!(wait(garbage, now), None, "{garbage:?}");
        }
    }

    #[test]
    fn retry_after_beyond_the_cap_is_capped_and_says_what_was_asked() {
        let now = SystemTime::now();
        assert_eq!(
            wait("86400", now),
            Some(RetryAfter {
                wait: HOUR,
                capped_from: Some(Duration::from_secs(86400)),
            })
        );
        let huge = wait("99999999999999999999999999", now).unwrap();
        assert_eq!(huge.wait, HOUR);
        assert_eq!(huge.capped_from, Some(Duration::from_secs(u64::MAX)));
        let far = wait("Fri, 31 Dec 9999 23:59:59 GMT", now).unwrap();
        assert_eq!(far.wait, HOUR);
        assert!(far.capped_from.unwrap() > Duration::from_secs(200 * 365 * 86400));
    }

    proptest::proptest! {
        #[test]
        fn any_retry_after_value_is_at_most_the_cap(
            value in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            cap_secs in 0u64..100_000,
            now_secs in 0u64..10_000_000_000,
        ) {
            let cap = Duration::from_secs(cap_secs);
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now_secs);
            if let Some(after) = parse_retry_after(&value, cap, now) {
                proptest::prop_assert!(after.wait <= cap);
                if let Some(asked) = after.capped_from {
                    proptest::prop_assert!(asked > cap && after.wait == cap);
                }
            }
        }

        #[test]
        fn any_number_or_date_is_understood_and_capped(
            secs in proptest::num::u64::ANY,
            date_secs in 0u64..253_402_300_799,
        ) {
            let now = SystemTime::now();
            let from_secs = wait(&secs.to_string(), now).unwrap();
            proptest::prop_assert_eq!(from_secs.wait, Duration::from_secs(secs).min(HOUR));
            let date = httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(date_secs));
            proptest::prop_assert!(wait(&date, now).unwrap().wait <= HOUR);
        }
    }
}
