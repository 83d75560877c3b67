//! File helpers for secrets and state: atomic 0600 writes (temp file in the
//! same directory, fsync, rename, fsync the directory), secret-file reads with
//! a permission check, and private (0700) directories.
//!
//! Atomicity matters most for the rotating refresh token: an IdP with reuse
//! detection revokes the whole grant when an old token is presented, so a torn
//! or lost write means the user has to log in again.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

#[cfg(unix)]
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};

/// Create `dir` (and parents) with mode 0700 if it does not exist.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

/// Atomically replace `path` with `contents`, mode 0600.
///
/// The temp file lives in the same directory (so `rename` is atomic), is
/// created exclusively, fsynced before the rename, and the directory is fsynced
/// after it, so a crash leaves either the old or the new file, never a mix.
pub fn write_atomic_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    ensure_private_dir(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let mut rnd = [0u8; 6];
    getrandom::fill(&mut rnd).map_err(|e| io::Error::other(e.to_string()))?;
    let tmp: PathBuf = dir.join(format!(
        ".{name}.tmp.{}.{}",
        std::process::id(),
        rnd.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ));
    let result = (|| {
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        opts.mode(0o600);
        let mut f = opts.open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        if let Ok(d) = File::open(dir) {
            // Directory fsync makes the rename itself durable.
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// How a secret file's permissions look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// Only the owner can read it.
    Private,
    /// Group or others may read it (mode given).
    Readable(u32),
}

/// Check whether group or others can read `path`.
pub fn exposure(path: &Path) -> io::Result<Exposure> {
    let meta = fs::metadata(path)?;
    #[cfg(unix)]
    {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Ok(Exposure::Readable(mode));
        }
    }
    let _ = meta;
    Ok(Exposure::Private)
}

/// Read a secret file; trailing whitespace (an editor's newline) is removed.
/// Warns (once per call site's caller) when the file is group/world readable.
pub fn read_secret_file(path: &Path) -> io::Result<String> {
    let raw = fs::read_to_string(path)?;
    if let Ok(Exposure::Readable(mode)) = exposure(path) {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{mode:o}"),
            "secret file is readable by group or others; run: chmod 600 {}",
            path.display()
        );
    }
    Ok(raw.trim_end().to_owned())
}

/// A cheap fingerprint of a file's identity and content (inode, size, mtime),
/// used to tell whether a refresh-token file changed since a failure.
pub fn fingerprint(path: &Path) -> Option<(u64, u64, i64, i64)> {
    let m = fs::metadata(path).ok()?;
    #[cfg(unix)]
    {
        Some((m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
    }
    #[cfg(not(unix))]
    {
        Some((0, m.len(), 0, 0))
    }
}

/// The current user's uid (from `/proc/self`; 0 if unknown).
pub fn current_uid() -> u32 {
    #[cfg(unix)]
    {
        fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0)
    }
    #[cfg(not(unix))]
    {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_is_private_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join("rt");
        write_atomic_private(&p, b"one").unwrap();
        write_atomic_private(&p, b"two").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "two");
        #[cfg(unix)]
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(exposure(&p).unwrap(), Exposure::Private);
        // No temp files left behind.
        let n = fs::read_dir(p.parent().unwrap()).unwrap().count();
        assert_eq!(n, 1);
    }

    #[test]
    fn secret_read_trims_newline_and_reports_exposure() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        fs::write(&p, "tok\n").unwrap();
        #[cfg(unix)]
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_secret_file(&p).unwrap(), "tok");
        #[cfg(unix)]
        assert_eq!(exposure(&p).unwrap(), Exposure::Readable(0o644));
    }
}
