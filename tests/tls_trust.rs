//! TLS trust: the agent trusts the system's CA store and a webhook's own
//! `ca_file`, nothing bundled. A loopback HTTPS receiver whose certificate a
//! private CA (made here) signed is refused until `ca_file` names that CA,
//! and the events queued meanwhile then arrive, none lost or repeated.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

use support::*;

const DEADLINE: Duration = Duration::from_secs(20);

/// A private CA and a certificate it signed for 127.0.0.1.
struct Pki {
    ca_pem: String,
    server_cert: rustls::pki_types::CertificateDer<'static>,
    server_key: Vec<u8>,
}

fn private_ca() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tailhook test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca, &ca_key)
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        server_cert: server.der().clone(),
        server_key: server_key.serialize_der(),
    }
}

/// An HTTPS endpoint on 127.0.0.1 answering every complete POST with 202;
/// it keeps the events of the JSON bodies it accepted.
struct TlsReceiver {
    url: String,
    events: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl TlsReceiver {
    fn start(pki: &Pki) -> TlsReceiver {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![pki.server_cert.clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(pki.server_key.clone().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = events.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                while let Ok((stream, _)) = listener.accept().await {
                    let (acceptor, seen) = (acceptor.clone(), seen.clone());
                    tokio::spawn(async move {
                        // A refused handshake (the agent does not trust us) ends here.
                        let Ok(mut tls) = acceptor.accept(stream).await else {
                            return;
                        };
                        while let Some(body) = read_request(&mut tls).await {
                            let accepted = serde_json::from_slice::<serde_json::Value>(&body)
                                .ok()
                                .and_then(|v| v["events"].as_array().cloned());
                            let answer: &[u8] = match accepted {
                                Some(events) => {
                                    seen.lock().unwrap().extend(events);
                                    b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n"
                                }
                                None => b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
                            };
                            if tls.write_all(answer).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            });
        });
        TlsReceiver {
            url: format!(
                "https://127.0.0.1:{port}/webhooks/01TEST?api_key={}",
                url::form_urlencoded::byte_serialize(API_KEY.as_bytes()).collect::<String>()
            ),
            events,
        }
    }

    fn events(&self) -> Vec<serde_json::Value> {
        self.events.lock().unwrap().clone()
    }
}

/// The body of one HTTP/1.1 request with a `content-length`; `None` when the
/// connection ends first.
async fn read_request(stream: &mut (impl AsyncReadExt + Unpin)) -> Option<Vec<u8>> {
    let mut data = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let header_end = loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = stream.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        data.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&data[..header_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())?;
    while data.len() < header_end + length {
        let n = stream.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        data.extend_from_slice(&chunk[..n]);
    }
    Some(data[header_end..header_end + length].to_vec())
}

#[test]
fn a_private_ca_is_trusted_only_through_the_webhooks_ca_file() {
    let pki = private_ca();
    let receiver = TlsReceiver::start(&pki);
    let setup = Setup::new();
    std::fs::write(setup.path("private-ca.pem"), &pki.ca_pem).unwrap();
    let keys = |webhook| ConfigKeys {
        agent: "poll_interval = \"100ms\"\nshutdown_timeout = \"1s\"",
        input: "start_at = \"beginning\"",
        webhook,
    };
    setup.append("auth.log", &(1..=3).map(failed_line).collect::<Vec<_>>());

    // Without ca_file the receiver's certificate is not trusted: delivery
    // fails, the log names the webhook and the reason, never the key.
    let config = setup.agent_config(
        &receiver.url,
        keys("batch_timeout = \"50ms\"\nmax_retry_delay = \"200ms\""),
    );
    let mut agent = Agent::start(&config);
    agent.wait_for_log("delivery failed; will retry", DEADLINE);
    wait_until(DEADLINE, "the untrusted certificate in the log", || {
        agent.logs().contains("UnknownIssuer")
    });
    let logs = agent.logs();
    let failure = logs
        .lines()
        .find(|l| l.contains("delivery failed"))
        .unwrap();
    assert!(failure.contains("webhook=soc"), "{failure}");
    assert!(!logs.contains("k3y") && !logs.contains(API_KEY), "{logs}");
    assert!(receiver.events().is_empty(), "nothing got through");
    agent.signal("TERM");
    agent.wait_exit(DEADLINE);

    // With the CA in ca_file, the queued events and new ones arrive.
    let config = setup.agent_config(
        &receiver.url,
        keys("batch_timeout = \"50ms\"\nca_file = \"private-ca.pem\""),
    );
    let agent = Agent::start(&config);
    setup.append("auth.log", &(4..=5).map(failed_line).collect::<Vec<_>>());
    wait_until(DEADLINE, "5 events over TLS", || {
        receiver.events().len() >= 5
    });
    // Sentinel: once line 6 is in, every earlier one has been through.
    setup.append("auth.log", &[failed_line(6)]);
    wait_until(DEADLINE, "the sentinel event", || {
        sequences(&receiver.events()).contains(&6)
    });
    let mut seen = sequences(&receiver.events());
    seen.sort_unstable();
    assert_eq!(seen, vec![1, 2, 3, 4, 5, 6], "none lost, none twice");
    let logs = agent.logs();
    assert!(!logs.contains("k3y") && !logs.contains(API_KEY), "{logs}");
}

/// The system store is what operators manage (here: `SSL_CERT_FILE`, which
/// the system-store loader reads instead of /etc/ssl): a CA added there is
/// trusted without `ca_file`.
#[test]
fn a_ca_in_the_system_store_is_trusted() {
    let pki = private_ca();
    let receiver = TlsReceiver::start(&pki);
    let setup = Setup::new();
    std::fs::write(setup.path("system-store.pem"), &pki.ca_pem).unwrap();
    setup.append("auth.log", &[failed_line(1)]);
    let config = setup.agent_config(
        &receiver.url,
        ConfigKeys {
            agent: "poll_interval = \"100ms\"",
            input: "start_at = \"beginning\"",
            webhook: "batch_timeout = \"50ms\"",
        },
    );
    let _agent = Agent::start_with_env(
        &config,
        &[],
        &[("SSL_CERT_FILE", setup.path("system-store.pem"))],
    );
    wait_until(DEADLINE, "the event over TLS", || {
        sequences(&receiver.events()) == [1]
    });
}

/// Removing a CA from the system store must take effect: no copy of the
/// Mozilla roots may be compiled in beside it.
#[test]
fn no_bundled_root_store_is_built_in() {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).unwrap();
    assert!(
        !lock.contains("name = \"webpki-roots\""),
        "webpki-roots (bundled Mozilla roots) is a dependency again; build reqwest with \
         rustls-tls-native-roots only"
    );
}
