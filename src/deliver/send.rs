//! Sending one body and classifying the answer.
//!
//! What to do next is decided here, from the status alone: 2xx delivered;
//! 408/429/5xx, timeouts and connection errors retried (honouring
//! `Retry-After`); any other 4xx rejected, because sending the same body again
//! cannot succeed. Error texts never carry the URL (it holds the `api_key`).

use std::io::Write;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;

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
        after: Option<Duration>,
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
                // Trust is the system store (reqwest is built without bundled
                // roots, so removing a CA there takes effect) plus `ca_file`.
                client: config
                    .extra_roots
                    .iter()
                    .fold(reqwest::Client::builder(), |builder, cert| {
                        builder.add_root_certificate(cert.clone())
                    })
                    .timeout(config.request_timeout)
                    .user_agent(concat!("tailhook/", env!("CARGO_PKG_VERSION")))
                    .build()?,
                url: url.clone(),
                content_type: config.content_type,
            },
        })
    }

    pub async fn send(&self, body: &[u8]) -> Outcome {
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
                    },
                }
            }
            Transport::Http {
                client,
                url,
                content_type,
            } => {
                let response = client
                    .post(url.expose().clone())
                    .header(CONTENT_TYPE, content_type.header_value())
                    .header(ACCEPT, "application/json")
                    .body(body.to_vec())
                    .send()
                    .await;
                match response {
                    Ok(response) => {
                        let status = response.status();
                        let retry_after = retry_after(response.headers());
                        // A receiver may echo the request, secret and all.
                        let text = url.scrub(&response.text().await.unwrap_or_default());
                        classify(status, retry_after, &text)
                    }
                    Err(e) => Outcome::Retry {
                        reason: url.scrub(&with_causes(&e.without_url())),
                        status: None,
                        after: None,
                    },
                }
            }
        }
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

fn classify(status: StatusCode, retry_after: Option<Duration>, text: &str) -> Outcome {
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
        }
    } else {
        Outcome::Rejected {
            status: status.as_u16(),
            reason: reason(),
        }
    }
}

/// `Retry-After` as seconds or as an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[tokio::test]
    async fn a_refused_connection_says_so_without_the_key() {
        // Nothing listens on a port bound and released just before.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let transport = Transport::Http {
            client: reqwest::Client::new(),
            url: SecretUrl::parse(&format!("http://127.0.0.1:{port}/x?api_key=hunter22")).unwrap(),
            content_type: ContentType::Json,
        };
        let Outcome::Retry { reason, status, .. } = transport.send(b"{}").await else {
            panic!("a refused connection is retried");
        };
        assert_eq!(status, None);
        assert!(reason.contains("Connection refused"), "{reason}");
        assert!(!reason.contains("hunter22"), "{reason}");
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

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        let later = SystemTime::now() + Duration::from_secs(120);
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_str(&httpdate::fmt_http_date(later)).unwrap(),
        );
        let wait = retry_after(&headers).unwrap();
        assert!(
            wait > Duration::from_secs(100) && wait <= Duration::from_secs(120),
            "{wait:?}"
        );
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }
}
