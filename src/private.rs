//! State files hold log content (auth logs: user names, addresses, commands):
//! they are created readable by the agent's user only, whatever the umask —
//! files 0600, folders 0700 (a umask can only take bits away from these).

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Creates `path` and its missing parents 0700; existing folders are left as
/// the operator made them.
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(path)
}

/// Options that create a file 0600. A file that already exists keeps its
/// mode: pass it to [`restrict`].
pub fn open_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(0o600);
    options
}

/// Makes an open file 0600: one left by an older version, or by a crash
/// part-way through a write, may be readable by others.
pub fn restrict(file: &File) -> io::Result<()> {
    file.set_permissions(Permissions::from_mode(0o600))
}
