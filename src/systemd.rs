//! systemd integration: the `sd_notify` protocol that `Type=notify` and
//! `WatchdogSec=` rely on.
//!
//! systemd passes a datagram socket in `$NOTIFY_SOCKET` (a path, or an
//! abstract name written with a leading `@`) and, when the unit sets
//! `WatchdogSec=`, the timeout in `$WATCHDOG_USEC` (for `$WATCHDOG_PID` only).
//! The agent sends `READY=1` once its pipeline runs, `WATCHDOG=1` while it
//! proves alive, `RELOADING=1` when SIGHUP starts a reload (and `READY=1`
//! again once it is done, applied or refused), and `STOPPING=1` when it
//! begins to shut down. Without `$NOTIFY_SOCKET` there is no [`Notifier`]
//! and nothing is sent.
//!
//! The protocol is a few lines over std's `UnixDatagram`; the `sd-notify`
//! crate would not reach abstract sockets.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A connection to the service manager's notification socket.
pub struct Notifier {
    socket: UnixDatagram,
    address: SocketAddr,
    watchdog: Option<Duration>,
    /// The last notification could not be sent.
    failing: AtomicBool,
}

impl Notifier {
    /// The notifier systemd asked for through the environment, if any.
    pub fn from_env() -> io::Result<Option<Notifier>> {
        let Some(name) = std::env::var_os("NOTIFY_SOCKET").filter(|n| !n.is_empty()) else {
            return Ok(None);
        };
        let watchdog = watchdog_timeout(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
        );
        Ok(Some(Notifier {
            socket: UnixDatagram::unbound()?,
            address: socket_address(&name)?,
            watchdog,
            failing: AtomicBool::new(false),
        }))
    }

    /// The unit's `WatchdogSec=`: systemd restarts the agent when no
    /// `WATCHDOG=1` arrives for this long.
    pub fn watchdog_timeout(&self) -> Option<Duration> {
        self.watchdog
    }

    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// A reload begins: systemd shows the unit `reloading` until the next
    /// `READY=1`, sent once the new config runs or was refused. sd_notify(3)
    /// asks for the time on `CLOCK_MONOTONIC`, by which systemd tells this
    /// reload from one it already saw end.
    pub fn reloading(&self) {
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading the configuration and rules",
            monotonic_usec()
        ));
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping: sending what the limits allow");
    }

    /// A lost notification must not stop the agent: systemd then reports the
    /// start as timed out, which the log line below explains. Only the first
    /// of a run of failures is logged, so watchdog pings cannot flood the log.
    fn send(&self, message: &str) {
        match self.socket.send_to_addr(message.as_bytes(), &self.address) {
            Ok(_) => self.failing.store(false, Ordering::Relaxed),
            Err(e) if !self.failing.swap(true, Ordering::Relaxed) => {
                tracing::warn!(error = %e, notification = ?message, "cannot notify systemd")
            }
            Err(_) => {}
        }
    }
}

/// Now on `CLOCK_MONOTONIC`, in microseconds (std's `Instant` reads the
/// same clock but does not say its value).
fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // CLOCK_MONOTONIC exists on every Linux and the pointer is valid, so
    // this cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000
}

fn socket_address(name: &OsStr) -> io::Result<SocketAddr> {
    match name.as_bytes().strip_prefix(b"@") {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name),
        None => SocketAddr::from_pathname(name),
    }
}

/// `$WATCHDOG_USEC` applies to this process unless `$WATCHDOG_PID` names
/// another one (a wrapper that exec'ed us keeps its pid, so it matches).
fn watchdog_timeout(usec: Option<&str>, pid: Option<&str>) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    match pid.map(|p| p.trim().parse::<u32>()) {
        Some(Ok(pid)) if pid != std::process::id() => None,
        _ => Some(Duration::from_micros(usec)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_timeout_reads_usec_for_this_process_only() {
        let me = std::process::id().to_string();
        assert_eq!(
            watchdog_timeout(Some("30000000"), None),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_timeout(Some("500000"), Some(&me)),
            Some(Duration::from_millis(500))
        );
        assert_eq!(watchdog_timeout(Some("500000"), Some("1")), None);
        assert_eq!(watchdog_timeout(Some("0"), None), None);
        assert_eq!(watchdog_timeout(Some("soon"), None), None);
        assert_eq!(watchdog_timeout(None, Some(&me)), None);
    }

    #[test]
    fn abstract_and_path_names_reach_their_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let by_path = UnixDatagram::bind(&path).unwrap();
        let name = format!("tailhook-unit-{}", std::process::id());
        let by_name =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        for (address, socket) in [
            (path.as_os_str().to_owned(), &by_path),
            (format!("@{name}").into(), &by_name),
        ] {
            let notifier = Notifier {
                socket: UnixDatagram::unbound().unwrap(),
                address: socket_address(&address).unwrap(),
                watchdog: None,
                failing: AtomicBool::new(false),
            };
            notifier.watchdog();
            let mut buf = [0u8; 64];
            socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let n = socket.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"WATCHDOG=1", "{address:?}");
        }
    }
}
