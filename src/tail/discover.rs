//! Which files an input tails right now: its globs expanded, minus excludes.
//!
//! Discovery is re-run on every wake-up, so files created while the agent runs
//! are picked up without any special path. It only lists paths; identity and
//! reading live in `file.rs`.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use super::file::FileId;

/// How many folders deep one `**` may lead below where it starts.
const MAX_DEPTH: usize = 32;
/// Folder entries one glob may look at in one expansion: a `**` over a huge
/// tree (or a maze of symlinks that is no loop) stops there.
const MAX_ENTRIES: usize = 200_000;

/// The include and exclude globs of one input.
#[derive(Debug, Clone)]
pub struct PathSet {
    include: Vec<Glob>,
    exclude: Vec<glob::Pattern>,
    /// Problems already logged (a folder loop, a bound reached): each once.
    warned: HashSet<String>,
}

#[derive(Debug, Clone)]
struct Glob {
    text: String,
    /// Everything before the first component with a wildcard.
    root: PathBuf,
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    Literal(OsString),
    Wild(glob::Pattern),
    /// `**`: this folder and every folder below it.
    AnyDepth,
}

impl Glob {
    fn new(text: &str) -> Glob {
        let mut root = PathBuf::new();
        let mut parts = Vec::new();
        for component in Path::new(text).components() {
            let name = component.as_os_str();
            let lossy = name.to_string_lossy();
            if parts.is_empty() && !lossy.contains(['*', '?', '[']) {
                root.push(name);
            } else if lossy == "**" {
                parts.push(Part::AnyDepth);
            } else if let (Component::Normal(_), Ok(pattern)) =
                (component, glob::Pattern::new(&lossy))
            {
                parts.push(Part::Wild(pattern));
            } else {
                parts.push(Part::Literal(name.to_os_string()));
            }
        }
        Glob {
            text: text.to_string(),
            root,
            parts,
        }
    }
}

/// One expansion of one glob: what it found and what it ran into.
struct Expansion<'a> {
    glob: &'a Glob,
    found: Vec<(PathBuf, std::fs::Metadata)>,
    problems: Vec<String>,
    entries_left: usize,
    /// The folders a `**` descended through to reach the current one.
    ancestors: Vec<(FileId, PathBuf)>,
}

impl Expansion<'_> {
    fn run(glob: &Glob) -> Expansion<'_> {
        let mut expansion = Expansion {
            glob,
            found: Vec::new(),
            problems: Vec::new(),
            entries_left: MAX_ENTRIES,
            ancestors: Vec::new(),
        };
        expansion.walk(&glob.root, 0);
        expansion
    }

    /// The entries of `dir`, counted against the bound.
    fn entries(&mut self, dir: &Path) -> Vec<(OsString, PathBuf)> {
        let listed = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let Ok(entries) = std::fs::read_dir(listed) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            if self.entries_left == 0 {
                self.problems.push(format!(
                    "paths: `{}` looked at {MAX_ENTRIES} folder entries in one scan and stopped there; files beyond are not tailed (narrow the glob)",
                    self.glob.text
                ));
                break;
            }
            self.entries_left -= 1;
            let name = entry.file_name();
            out.push((name.clone(), dir.join(name)));
        }
        out
    }

    fn walk(&mut self, path: &Path, at: usize) {
        if self.entries_left == 0 {
            return;
        }
        let Some(part) = self.glob.parts.get(at) else {
            if let Ok(meta) = std::fs::metadata(path) {
                if meta.is_file() {
                    self.found.push((path.to_path_buf(), meta));
                }
            }
            return;
        };
        match part {
            Part::Literal(name) => self.walk(&path.join(name), at + 1),
            Part::Wild(pattern) => {
                let pattern = pattern.clone();
                for (name, child) in self.entries(path) {
                    if pattern.matches(&name.to_string_lossy()) {
                        self.walk(&child, at + 1);
                    }
                }
            }
            Part::AnyDepth => {
                let Ok(meta) = std::fs::metadata(if path.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    path
                }) else {
                    return;
                };
                if !meta.is_dir() {
                    return;
                }
                let id = FileId::of(&meta);
                let entered = self.ancestors.last().map(|(last, _)| *last) != Some(id);
                if entered {
                    self.ancestors.push((id, path.to_path_buf()));
                }
                // Zero folders deep, then each folder below.
                self.walk(path, at + 1);
                for (_, child) in self.entries(path) {
                    let Ok(meta) = std::fs::metadata(&child) else {
                        continue;
                    };
                    if !meta.is_dir() {
                        continue;
                    }
                    let child_id = FileId::of(&meta);
                    if let Some((_, earlier)) = self.ancestors.iter().find(|(a, _)| *a == child_id)
                    {
                        self.problems.push(format!(
                            "paths: `{}`: {} leads back to {} (a folder loop through a symlink); not followed",
                            self.glob.text,
                            child.display(),
                            earlier.display()
                        ));
                        continue;
                    }
                    if self.ancestors.len() > MAX_DEPTH {
                        self.problems.push(format!(
                            "paths: `{}`: {} is more than {MAX_DEPTH} folders below where `**` starts; not followed",
                            self.glob.text,
                            child.display()
                        ));
                        continue;
                    }
                    self.ancestors.push((child_id, child.clone()));
                    self.walk(&child, at);
                    self.ancestors.pop();
                }
                if entered {
                    self.ancestors.pop();
                }
            }
        }
    }
}

impl PathSet {
    /// `include` and `exclude` were validated as globs when the config loaded.
    pub fn new(include: &[String], exclude: &[String]) -> PathSet {
        PathSet {
            include: include.iter().map(|text| Glob::new(text)).collect(),
            exclude: crate::rules::compile_globs(exclude),
            warned: HashSet::new(),
        }
    }

    /// The regular files the globs match, with the stat that found them.
    /// `**` follows symlinked folders but never into a loop, and expansion
    /// is bounded; each problem met is logged once.
    pub fn files(&mut self) -> BTreeMap<PathBuf, std::fs::Metadata> {
        let (found, problems) = self.expand();
        for problem in problems {
            if self.warned.insert(problem.clone()) {
                tracing::warn!("{problem}");
            }
        }
        found
    }

    /// What expanding the globs runs into now (folder loops, bounds), for
    /// `tailhook check`.
    pub fn problems(&self) -> Vec<String> {
        self.expand().1
    }

    fn expand(&self) -> (BTreeMap<PathBuf, std::fs::Metadata>, Vec<String>) {
        let mut found = BTreeMap::new();
        let mut problems = Vec::new();
        for glob in &self.include {
            let expansion = Expansion::run(glob);
            for (path, meta) in expansion.found {
                if !self.excluded(&path) {
                    found.insert(path, meta);
                }
            }
            for problem in expansion.problems {
                if !problems.contains(&problem) {
                    problems.push(problem);
                }
            }
        }
        (found, problems)
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
            .map(|glob| {
                let path = Path::new(&glob.text);
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
        let mut set = PathSet::new(&[format!("{base}/auth.log*")], &[format!("{base}/*.gz")]);
        let files: Vec<_> = set.files().into_keys().collect();
        assert_eq!(
            files,
            vec![dir.path().join("auth.log"), dir.path().join("auth.log.1")]
        );
    }

    #[test]
    fn any_depth_follows_symlinked_folders_but_not_into_loops() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(logs.join("sub/deeper")).unwrap();
        std::fs::create_dir_all(dir.path().join("elsewhere")).unwrap();
        for file in [
            "logs/top.log",
            "logs/sub/a.log",
            "logs/sub/deeper/b.log",
            "elsewhere/c.log",
        ] {
            std::fs::write(dir.path().join(file), "x\n").unwrap();
        }
        std::os::unix::fs::symlink("..", logs.join("sub/up")).unwrap();
        std::os::unix::fs::symlink("../sub", logs.join("sub/cyc")).unwrap();
        std::os::unix::fs::symlink("../elsewhere", logs.join("linked")).unwrap();
        let mut set = PathSet::new(&[format!("{}/**/*.log", logs.display())], &[]);
        let files: Vec<_> = set.files().into_keys().collect();
        assert_eq!(
            files,
            vec![
                logs.join("linked/c.log"),
                logs.join("sub/a.log"),
                logs.join("sub/deeper/b.log"),
                logs.join("top.log"),
            ]
        );
        let problems = set.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems
            .iter()
            .all(|p| p.contains("**/*.log") && p.contains("folder loop")));
        assert!(problems.iter().any(|p| p.contains("sub/up leads back to")));
        assert!(problems.iter().any(|p| p.contains("sub/cyc leads back to")));
    }

    proptest::proptest! {
        /// On a tree without symlinks, the expansion finds exactly the
        /// files the `glob` crate finds, for any mix of wildcards.
        #[test]
        fn expansion_agrees_with_the_glob_crate_without_symlinks(
            parts in proptest::collection::vec(
                proptest::sample::select(vec!["*", "**", "a*", "?", "b", "*.log", "[ab]*", "sub", ".h*"]),
                1..5,
            ),
        ) {
            let dir = tempfile::tempdir().unwrap();
            for file in ["a.log", "b", "sub/a.log", "sub/b/c.log", "sub/b/deep/x.log", ".hidden/a.log", "ab/b"] {
                let path = dir.path().join(file);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, "x\n").unwrap();
            }
            let pattern = format!("{}/{}", dir.path().display(), parts.join("/"));
            let ours: Vec<PathBuf> = PathSet::new(std::slice::from_ref(&pattern), &[])
                .files()
                .into_keys()
                .collect();
            let mut theirs: Vec<PathBuf> = glob::glob(&pattern)
                .unwrap()
                .flatten()
                .filter(|p| p.is_file())
                .collect();
            theirs.sort();
            theirs.dedup();
            proptest::prop_assert_eq!(ours, theirs, "pattern {}", pattern);
        }
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
