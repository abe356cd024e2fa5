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

/// Looks at a file input's paths now; `None` for a journald input.
pub fn survey(input: &InputConfig) -> Option<Reach> {
    if input.kind == InputKind::Journald {
        return None;
    }
    let mut reach = Reach::default();
    let mut readable = BTreeSet::new();
    for pattern in &input.paths {
        let excludes = PathSet::new(std::slice::from_ref(pattern), &input.exclude);
        let mut matched = false;
        // A literal path under a folder the agent may not search is not
        // "missing": glob would list nothing and hide why.
        if !pattern.contains(['*', '?', '[']) {
            if let Err(e) = std::fs::metadata(pattern) {
                if e.kind() == ErrorKind::PermissionDenied {
                    reach.unreadable.push(unreadable(Path::new(pattern), &e));
                    matched = true;
                }
            }
        }
        for entry in glob::glob(pattern).into_iter().flatten() {
            match entry {
                Ok(path) if !excludes.excluded(&path) => {
                    matched |= look_at(path, &mut readable, &mut reach.unreadable)
                }
                Ok(_) => {}
                Err(e) if e.error().kind() == ErrorKind::PermissionDenied => {
                    reach.unreadable.push(unreadable(e.path(), e.error()));
                    matched = true;
                }
                Err(_) => {}
            }
        }
        if !matched {
            reach.unmatched.push(pattern.clone());
        }
    }
    // `*.log` and `secret.log` may both lead to one file.
    reach.unreadable.sort();
    reach.unreadable.dedup();
    reach.readable_files = readable.len() as u64;
    Some(reach)
}

/// Files `path` as readable or not; whether it is a file at all.
fn look_at(path: PathBuf, readable: &mut BTreeSet<PathBuf>, failed: &mut Vec<Unreadable>) -> bool {
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() => {
            match std::fs::File::open(&path) {
                Ok(_) => {
                    readable.insert(path);
                }
                Err(e) => failed.push(unreadable(&path, &e)),
            }
            true
        }
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            failed.push(unreadable(&path, &e));
            true
        }
        // A dangling symlink or a file gone since the glob: nothing to read.
        Err(_) => false,
    }
}

fn unreadable(path: &Path, error: &std::io::Error) -> Unreadable {
    Unreadable {
        path: path.display().to_string(),
        error: error.to_string(),
    }
}

impl Reach {
    /// One sentence per path that reads nothing, with the fix for a
    /// permission: for `check`, the agent's log and `status`.
    pub fn problems(&self) -> Vec<String> {
        self.unmatched
            .iter()
            .map(|pattern| format!("path `{pattern}` matches no file"))
            .chain(self.unreadable.iter().map(|u| {
                format!(
                    "`{}` cannot be read: {}; {}",
                    u.path,
                    u.error,
                    permission_fix(&u.path)
                )
            }))
            .collect()
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
            reach.problems()[0],
            format!("path `{base}/link.log` matches no file")
        );
    }
}
