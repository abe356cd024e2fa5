//! Whether an input can read anything. A path that matches no file, or a
//! file the agent's user may not open, tails nothing without failing: the
//! tailer retries quietly, so `check`, the start-up log, `status` and
//! `/metrics` say so instead.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::discover::PathSet;
use crate::config::{InputConfig, InputKind};

/// What a file input's paths reach right now, as this process sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reach {
    /// Regular files matched that this process can open.
    pub readable_files: u64,
    /// Configured paths (globs) that match no file.
    pub unmatched: Vec<String>,
    /// Files, or folders on the way to them, that cannot be opened.
    pub unreadable: Vec<Unreadable>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Unreadable {
    pub path: String,
    pub error: String,
}

/// Looks at a file input's paths now, as the tailer finds files (the same
/// glob expansion and excludes); `None` for a journald input.
pub fn survey(input: &InputConfig) -> Option<Reach> {
    if input.kind == InputKind::Journald {
        return None;
    }
    let mut reach = Reach::default();
    let mut readable = BTreeSet::new();
    for pattern in &input.paths {
        let paths = PathSet::new(std::slice::from_ref(pattern), &input.exclude);
        let files = paths.files_quietly();
        if files.is_empty() {
            match blocked_on_the_way(pattern, &paths) {
                Some(blocked) => reach.unreadable.push(blocked),
                None => reach.unmatched.push(pattern.clone()),
            }
        }
        for path in files.into_keys() {
            match std::fs::File::open(&path) {
                Ok(_) => {
                    readable.insert(path);
                }
                Err(e) => reach.unreadable.push(unreadable(&path, &e)),
            }
        }
    }
    // `*.log` and `secret.log` may both lead to one file.
    reach.unreadable.sort();
    reach.unreadable.dedup();
    reach.readable_files = readable.len() as u64;
    Some(reach)
}

/// Why `pattern` finds nothing when the cause is a permission: a folder on
/// the way the agent may not enter (glob would just list nothing).
fn blocked_on_the_way(pattern: &str, paths: &PathSet) -> Option<Unreadable> {
    let literal = !pattern.contains(['*', '?', '[']);
    let (path, denied) = if literal {
        (PathBuf::from(pattern), std::fs::metadata(pattern).err())
    } else {
        let (root, _) = paths.watch_roots().into_iter().next()?;
        let denied = std::fs::read_dir(&root).err();
        (root, denied)
    };
    denied
        .filter(|e| e.kind() == ErrorKind::PermissionDenied)
        .map(|e| unreadable(&path, &e))
}

fn unreadable(path: &Path, error: &std::io::Error) -> Unreadable {
    Unreadable {
        path: path.display().to_string(),
        error: error.to_string(),
    }
}

/// How much a finding about an input's paths matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The input reads nothing through this path, and nothing at all, or
    /// a file is there that the agent may not read: `check --strict` fails.
    Warning,
    /// A path matches no file while the input's other paths do: usual for
    /// alternatives such as `/var/log/auth.log` and `/var/log/secure`.
    Note,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Note => "note",
        }
    }
}

impl Reach {
    /// One sentence per path that reads nothing, with the fix for a
    /// permission: for `check`, the agent's log and `status`.
    pub fn findings(&self) -> Vec<(Severity, String)> {
        let unmatched = self.unmatched.iter().map(|pattern| {
            if self.readable_files == 0 {
                (
                    Severity::Warning,
                    format!("path `{pattern}` matches no file: the input reads nothing"),
                )
            } else {
                (
                    Severity::Note,
                    format!(
                        "path `{pattern}` matches no file (the input reads {} through its other paths)",
                        files(self.readable_files)
                    ),
                )
            }
        });
        let unreadable = self.unreadable.iter().map(|u| {
            let fix = permission_fix(&u.path);
            let text = format!("`{}` cannot be read: {}; {fix}", u.path, u.error);
            (Severity::Warning, text)
        });
        unmatched.chain(unreadable).collect()
    }
}

fn files(count: u64) -> String {
    match count {
        1 => "1 file".into(),
        n => format!("{n} files"),
    }
}

/// How an operator lets the agent's user read a log it may not.
pub fn permission_fix(path: &str) -> String {
    format!(
        "let the agent's user read it: on Debian-likes add it to the group owning the logs \
         (`usermod -aG adm tailhook`, then restart the agent: groups are set at start), \
         on RHEL-likes grant it with an ACL (`setfacl -m u:tailhook:r {path}`, read at once)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(paths: &[String]) -> InputConfig {
        let text = format!(
            "[[input]]\nname = \"auth\"\npaths = {paths:?}\n[webhook.soc]\nurl = \"http://127.0.0.1:1/\"\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tailhook.toml");
        std::fs::write(&file, text).unwrap();
        crate::config::Config::load(&file).unwrap().inputs.remove(0)
    }

    #[test]
    fn missing_paths_and_dangling_links_match_nothing_and_files_count() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().display();
        std::fs::write(dir.path().join("a.log"), "x\n").unwrap();
        std::fs::write(dir.path().join("b.log"), "x\n").unwrap();
        std::os::unix::fs::symlink(dir.path().join("gone"), dir.path().join("link.log")).unwrap();
        let reach = survey(&input(&[
            format!("{base}/*.log"),
            format!("{base}/a.log"),
            format!("{base}/link.log"),
            format!("{base}/a.log/under-a-file"),
        ]))
        .unwrap();
        assert_eq!(reach.readable_files, 2, "a.log is counted once");
        assert_eq!(
            reach.unmatched,
            vec![
                format!("{base}/link.log"),
                format!("{base}/a.log/under-a-file")
            ]
        );
        assert!(reach.unreadable.is_empty());
        assert_eq!(
            reach.findings()[0],
            (
                Severity::Note,
                format!("path `{base}/link.log` matches no file (the input reads 2 files through its other paths)")
            )
        );
        let nothing = survey(&input(&[format!("{base}/*.txt")])).unwrap();
        assert_eq!(
            nothing.findings()[0].0,
            Severity::Warning,
            "an input that reads nothing"
        );
    }
}
