//! A directory only this user can read (0700), holding the credential files
//! one engine call hands to a client program — an SSH key and known_hosts
//! for `ssh`, TLS certificates for `virsh` — each written once with its own
//! mode, and the whole directory removed when dropped.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub(crate) struct PrivateDir(tempfile::TempDir);

impl PrivateDir {
    /// A fresh directory under the system's temporary one, named `prefix…`.
    pub(crate) fn create(prefix: &str) -> std::io::Result<PrivateDir> {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
        Ok(PrivateDir(dir))
    }

    pub(crate) fn path(&self) -> &Path {
        self.0.path()
    }

    /// Writes `text` to a new file `name` made with `mode` (never an
    /// existing file, so nothing planted there is followed or reused).
    pub(crate) fn write(&self, name: &str, text: &str, mode: u32) -> std::io::Result<PathBuf> {
        let path = self.0.path().join(name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)?;
        file.write_all(text.as_bytes())?;
        Ok(path)
    }
}
