//! Shared by the benches: a deterministic, realistic mixed log corpus.

#![allow(dead_code)] // each bench uses a part

use std::io::Write;
use std::path::{Path, PathBuf};

/// Deterministic generator (an LCG: the corpus must be the same every run).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn ip(rng: &mut Lcg) -> String {
    format!(
        "{}.{}.{}.{}",
        1 + rng.below(223),
        rng.below(256),
        rng.below(256),
        1 + rng.below(254)
    )
}

fn stamp(i: u64) -> String {
    let secs = i / 7;
    format!(
        "Nov {:2} {:02}:{:02}:{:02}",
        1 + (secs / 86400) % 28,
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

/// A line no shipped rule should match (what most of a real auth.log is).
pub fn noise(rng: &mut Lcg, i: u64) -> String {
    let t = stamp(i);
    let pid = 1000 + rng.below(60000);
    match rng.below(9) {
        0 => format!("{t} web1 CRON[{pid}]: pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)"),
        1 => format!("{t} web1 CRON[{pid}]: pam_unix(cron:session): session closed for user root"),
        2 => format!("{t} web1 systemd-logind[512]: New session {pid} of user deploy."),
        3 => format!("{t} web1 sshd[{pid}]: pam_unix(sshd:session): session opened for user deploy(uid=1001) by (uid=0)"),
        4 => format!("{t} web1 sshd[{pid}]: Received signal 15; terminating."),
        5 => format!("{t} mail postfix/smtpd[{pid}]: connect from unknown[{}]", ip(rng)),
        6 => format!("{t} mail postfix/smtpd[{pid}]: disconnect from mail.example.org[{}] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5", ip(rng)),
        7 => format!("{t} mail dovecot: imap-login: Login: user=<u{pid}@example.com>, method=PLAIN, rip={}, lip=192.0.2.1, mpid={pid}, TLS", ip(rng)),
        _ => format!(
            "{} - - [22/Nov/2026:10:00:01 +0000] \"GET /static/app.{pid}.js HTTP/1.1\" 200 {} \"https://example.com/\" \"Mozilla/5.0 (X11; Linux x86_64)\"",
            ip(rng),
            rng.below(90000)
        ),
    }
}

/// A line some shipped rule matches.
pub fn hit(rng: &mut Lcg, i: u64) -> String {
    let t = stamp(i);
    let pid = 1000 + rng.below(60000);
    let port = 1024 + rng.below(60000);
    match rng.below(6) {
        0 => format!("{t} web1 sshd[{pid}]: Failed password for root from {} port {port} ssh2", ip(rng)),
        1 => format!("{t} web1 sshd[{pid}]: Invalid user admin{pid} from {} port {port}", ip(rng)),
        2 => format!("{t} web1 sshd[{pid}]: Connection closed by authenticating user root {} port {port} [preauth]", ip(rng)),
        3 => format!("{t} mail postfix/smtpd[{pid}]: warning: unknown[{}]: SASL LOGIN authentication failed: UGFzc3dvcmQ6", ip(rng)),
        4 => format!("{t} mail dovecot: imap-login: Aborted login (auth failed, 1 attempts in 2 secs): user=<a{pid}>, method=PLAIN, rip={}, lip=192.0.2.1, TLS", ip(rng)),
        _ => format!("2026/11/22 10:00:01 [error] 2865#0: *{pid} user \"u{pid}\": password mismatch, client: {}, server: www.example.com, request: \"GET /admin HTTP/1.1\", host: \"www.example.com\"", ip(rng)),
    }
}

pub fn corpus(dir: &Path, megabytes: u64, percent: u64) -> PathBuf {
    let path = dir.join(format!("mixed-{megabytes}MB-{percent}pct.log"));
    if path.exists() {
        return path;
    }
    let mut rng = Lcg(percent);
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let (mut written, mut i) = (0, 0);
    while written < megabytes * 1_000_000 {
        let line = if rng.below(100) < percent {
            hit(&mut rng, i)
        } else {
            noise(&mut rng, i)
        };
        writeln!(out, "{line}").unwrap();
        written += line.len() as u64 + 1;
        i += 1;
    }
    path
}
