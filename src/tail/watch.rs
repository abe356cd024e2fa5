//! inotify (through `notify`) as a wake-up hint for the tailer.
//!
//! Events carry no data we trust: any event in a watched folder only wakes the
//! tailer early, and the tailer then stats and reads everything it knows. A
//! missed or overflowed event costs at most one poll interval, never a line.
//! When watches cannot be set up (inotify limits, unsupported file systems),
//! the tailer simply polls.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender};

use notify::{RecursiveMode, Watcher};

pub struct Wakeups {
    watcher: Option<notify::RecommendedWatcher>,
    watched: HashSet<PathBuf>,
    receiver: Receiver<()>,
    sender: SyncSender<()>,
}

/// Wakes the tailer from another thread (used to make shutdown prompt).
#[derive(Clone)]
pub struct Waker(SyncSender<()>);

impl Waker {
    pub fn wake(&self) {
        wake(&self.0);
    }
}

impl Wakeups {
    /// With `use_inotify` false (e.g. logs on NFS), or when notifications
    /// cannot be set up, the tailer wakes only every poll interval.
    pub fn new(use_inotify: bool) -> Wakeups {
        // One slot: a burst of events while the tailer is busy is one wake-up.
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        let notify_sender = sender.clone();
        let watcher = if use_inotify {
            // Every event wakes, errors and overflow included: the scan that
            // follows finds what changed, whatever the event said. Except
            // opens and closes: the scan itself opens the watched folders, and
            // waking on that would spin.
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if !matches!(&event, Ok(e) if e.kind.is_access()) {
                    wake(&notify_sender);
                }
            })
            .map_err(|e| tracing::warn!(error = %e, "file notifications unavailable; polling only"))
            .ok()
        } else {
            tracing::info!("inotify disabled by config; polling only");
            None
        };
        Wakeups {
            watcher,
            watched: HashSet::new(),
            receiver,
            sender,
        }
    }

    pub fn waker(&self) -> Waker {
        Waker(self.sender.clone())
    }

    /// Watches `roots` not watched yet; folders that do not exist yet are tried
    /// again on the next call.
    pub fn watch(&mut self, roots: &[(PathBuf, bool)]) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        for (root, recursive) in roots {
            if self.watched.contains(root) || !root.is_dir() {
                continue;
            }
            let mode = if *recursive {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            match watcher.watch(root, mode) {
                Ok(()) => {
                    self.watched.insert(root.clone());
                }
                Err(e) => {
                    tracing::warn!(folder = %root.display(), error = %e, "cannot watch folder; polling it");
                    // Remember it anyway: retrying every poll would repeat the warning.
                    self.watched.insert(root.clone());
                }
            }
        }
    }

    /// Waits for a notification or `timeout`, whichever comes first; true
    /// when something woke it.
    pub fn wait(&self, timeout: std::time::Duration) -> bool {
        self.receiver.recv_timeout(timeout).is_ok()
    }

    /// Whether file system notifications are on (else only the poll runs).
    pub fn notifies(&self) -> bool {
        self.watcher.is_some()
    }
}

fn wake(sender: &SyncSender<()>) {
    // Full means a wake-up is already pending; that one covers this event too.
    let _ = sender.try_send(());
}
