//! Which files an input tails right now: its globs expanded, minus excludes.
//!
//! Discovery is re-run on every wake-up, so files created while the agent runs
//! are picked up without any special path. It only lists paths; identity and
//! reading live in `file.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The include and exclude globs of one input.
#[derive(Debug, Clone)]
pub struct PathSet {
    include: Vec<String>,
    exclude: Vec<glob::Pattern>,
}

impl PathSet {
    /// `include` and `exclude` were validated as globs when the config loaded.
    pub fn new(include: &[String], exclude: &[String]) -> PathSet {
        PathSet {
            include: include.to_vec(),
            exclude: crate::rules::compile_globs(exclude),
        }
    }

    /// Regular files matching now, sorted and without duplicates.
    /// The regular files the globs match, with the stat that found them.
    pub fn files(&self) -> BTreeMap<PathBuf, std::fs::Metadata> {
        let mut found = BTreeMap::new();
        for pattern in &self.include {
            let Ok(paths) = glob::glob(pattern) else {
                continue;
            };
            for path in paths.flatten() {
                if self.excluded(&path) {
                    continue;
                }
                if let Ok(meta) = std::fs::metadata(&path) {
                    if meta.is_file() {
                        found.insert(path, meta);
                    }
                }
            }
        }
        found
    }

    pub fn excluded(&self, path: &Path) -> bool {
        self.exclude.iter().any(|p| p.matches_path(path))
    }

    /// Folders whose changes can add or grow a matching file: for each glob,
    /// the deepest folder above its first wildcard, and whether the wildcard
    /// part spans folders (then the watch must be recursive).
    pub fn watch_roots(&self) -> Vec<(PathBuf, bool)> {
        self.include
            .iter()
            .map(|pattern| {
                let path = Path::new(pattern);
                let mut root = PathBuf::new();
                let mut rest = 0;
                for part in path.components() {
                    let text = part.as_os_str().to_string_lossy();
                    if text.contains(['*', '?', '[']) {
                        break;
                    }
                    root.push(part);
                    rest += 1;
                }
                let wild_parts = path.components().count() - rest;
                if wild_parts == 0 {
                    // A plain file path: watch its folder, so a re-created file is seen.
                    root.pop();
                }
                (root, wild_parts > 1)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_expand_and_excludes_apply() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["auth.log", "auth.log.1", "auth.log.2.gz", "other.txt"] {
            std::fs::write(dir.path().join(name), "x\n").unwrap();
        }
        std::fs::create_dir(dir.path().join("auth.log.d")).unwrap();
        let base = dir.path().to_string_lossy();
        let set = PathSet::new(&[format!("{base}/auth.log*")], &[format!("{base}/*.gz")]);
        let files: Vec<_> = set.files().into_keys().collect();
        assert_eq!(
            files,
            vec![dir.path().join("auth.log"), dir.path().join("auth.log.1")]
        );
    }

    #[test]
    fn watch_roots_stop_at_the_first_wildcard() {
        let set = PathSet::new(
            &[
                "/var/log/auth.log".into(),
                "/var/log/nginx/*.log".into(),
                "/srv/*/logs/*.log".into(),
            ],
            &[],
        );
        assert_eq!(
            set.watch_roots(),
            vec![
                (PathBuf::from("/var/log"), false),
                (PathBuf::from("/var/log/nginx"), false),
                (PathBuf::from("/srv"), true),
            ]
        );
    }
}
