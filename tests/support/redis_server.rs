//! A real `redis-server` of the test's own, on a unix socket in a temp
//! folder, with AOF (`appendfsync always`), stopped by its PID. It can be
//! killed and started again on the same folder (the AOF brings the data
//! back) or started empty.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::missing_prerequisite;

pub struct RedisServer {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// `requirepass`, when the server asks for one.
    password: Option<String>,
}

impl RedisServer {
    /// A started server, or `None` (the test skips, or fails under
    /// `CI=true`) when `redis-server` is not installed.
    pub fn start() -> Option<RedisServer> {
        Self::start_with(None)
    }

    /// A started server that asks for `password` (`requirepass`).
    pub fn start_with_password(password: &str) -> Option<RedisServer> {
        Self::start_with(Some(password.to_string()))
    }

    fn start_with(password: Option<String>) -> Option<RedisServer> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            missing_prerequisite(
                "redis-server is not installed (apt-get install redis-server; .ci/run does it)",
            );
            return None;
        }
        let mut server = RedisServer {
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
            password,
        };
        server.restart();
        Some(server)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("r.sock")
    }

    /// The URL agents are given (with the password, when there is one).
    pub fn url(&self) -> String {
        let pass = self
            .password
            .as_ref()
            .map(|p| format!("?pass={p}"))
            .unwrap_or_default();
        format!("unix://{}{pass}", self.socket().display())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the server on its folder (after a kill: on its AOF) and
    /// waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let _ = std::fs::remove_file(self.socket());
        let mut command = Command::new("redis-server");
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        let child = command
            .args(["--port", "0", "--unixsocket"])
            .arg(self.socket())
            .args(["--unixsocketperm", "700", "--dir"])
            .arg(self.dir.path())
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--logfile",
                "redis.log",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !answers(&self.socket(), self.password.as_deref()) {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer within 10s: {}",
                std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the server with nothing: its AOF removed (a Redis that came back empty).
    pub fn restart_empty(&mut self) {
        assert!(self.child.is_none(), "stop redis-server first");
        let _ = std::fs::remove_dir_all(self.dir.path().join("appendonlydir"));
        self.restart();
    }

    /// `kill -9`: what was acknowledged is in the AOF (`appendfsync always`).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `SIGSTOP` or `SIGCONT`.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid().expect("running").to_string();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// A connection of the test's own, to look at or change what the fleet keeps.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(5)))
            .expect("connect to the test's redis-server")
    }

    pub fn folder(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether the server answers PING (after AUTH with `password`).
fn answers(socket: &Path, password: Option<&str>) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if let Some(password) = password {
        let mut ok = [0u8; 5];
        let auth = format!("AUTH {password}\r\n");
        if stream.write_all(auth.as_bytes()).is_err()
            || stream.read_exact(&mut ok).is_err()
            || &ok != b"+OK\r\n"
        {
            return false;
        }
    }
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}
