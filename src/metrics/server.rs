//! The HTTP endpoint on `agent.metrics_listen`: `GET /metrics` (Prometheus
//! text) and `GET /health` (200 and `{"status":"ok"}` while the agent does
//! its job; 503 with the problems, or `stopping`, when it does not).
//!
//! hyper's HTTP/1 server is already in the build through reqwest's client, so
//! serving takes a few lines and no HTTP parsing of our own.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;

use crate::control::Running;

/// Binds `addr` now, so a taken port fails the start with a clear error.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("agent.metrics_listen: cannot listen on {addr}: {e}"))
}

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener, running: Arc<Running>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: cannot accept");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let running = running.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let running = running.clone();
                async move { Ok::<_, Infallible>(respond(&request, running).await) }
            });
            // With a timer, hyper closes a connection whose request headers
            // do not come within 30 s, so idle clients cannot pile up.
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn respond(request: &Request<Incoming>, running: Arc<Running>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header("Content-Type", content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("static response parts are valid")
    };
    if request.method() != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match request.uri().path() {
        // Reads checkpoint files, the queue and /proc: off the runtime's
        // workers, which the deliveries need.
        "/metrics" => {
            match tokio::task::spawn_blocking(move || running.metrics.render(&running.scrape()))
                .await
            {
                Ok(text) => reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    text,
                ),
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("cannot gather the metrics: {e}\n"),
                ),
            }
        }
        // Reads the queue's oldest events: off the workers too.
        "/health" => match tokio::task::spawn_blocking(move || running.health()).await {
            Ok(verdict) => {
                let status = if verdict.is_ok() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                let mut body = serde_json::to_string(&verdict).expect("verdicts serialize");
                body.push('\n');
                reply(status, "application/json", body)
            }
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("cannot judge the health: {e}\n"),
            ),
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /metrics or /health\n".into(),
        ),
    }
}
