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

/// Finish an interrupted [`write_atomic_private`] of `path`.
///
/// A process killed after the temp file was written and fsynced but before
/// the rename leaves `.NAME.tmp.*` behind. For a rotating refresh token that
/// file holds the only valid token (the IdP has already retired the old one),
/// so it is rolled forward when it is newer than `path` (or `path` is gone).
/// Leftovers older than `path` are stale and removed. Returns whether a temp
/// file was rolled forward.
pub fn recover_interrupted_write(path: &Path) -> io::Result<bool> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(false);
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!(".{}.tmp.", name.to_string_lossy());
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let mut leftovers: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            if m.is_file() && m.len() == 0 {
                // Died before writing anything: nothing to recover.
                let _ = fs::remove_file(e.path());
                return None;
            }
            m.is_file()
                .then(|| (m.modified().ok().unwrap_or(std::time::UNIX_EPOCH), e.path()))
        })
        .collect();
    if leftovers.is_empty() {
        return Ok(false);
    }
    leftovers.sort();
    let target_time = fs::metadata(path).and_then(|m| m.modified()).ok();
    let mut rolled = false;
    if let Some((newest_time, newest)) = leftovers.pop() {
        if target_time.is_none_or(|t| newest_time >= t) {
            fs::rename(&newest, path)?;
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
            rolled = true;
        } else {
            leftovers.push((newest_time, newest));
        }
    }
    for (_, stale) in leftovers {
        let _ = fs::remove_file(stale);
    }
    Ok(rolled)
}

/// Remove temp files a killed [`write_atomic_private`] of `path` left behind
/// (for files whose content is re-creatable, unlike a rotated refresh token:
/// see [`recover_interrupted_write`]).
pub fn remove_stale_temps(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let prefix = format!(".{}.tmp.", name.to_string_lossy());
    if let Ok(entries) = fs::read_dir(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    }) {
        for e in entries.filter_map(Result::ok) {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
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
    fn interrupted_writes_roll_forward_and_stale_ones_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rt");
        assert!(!recover_interrupted_write(&p).unwrap());
        fs::write(&p, "old").unwrap();
        // A temp file left by a write killed before its rename, newer than the target.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let tmp = dir.path().join(".rt.tmp.123.abc");
        fs::write(&tmp, "new").unwrap();
        fs::write(dir.path().join(".rt.tmp.122.abc"), "").unwrap();
        assert!(recover_interrupted_write(&p).unwrap());
        assert_eq!(fs::read_to_string(&p).unwrap(), "new");
        assert!(!tmp.exists());
        assert!(!dir.path().join(".rt.tmp.122.abc").exists());
        // A leftover older than the target is stale: removed, target kept.
        let stale = dir.path().join(".rt.tmp.1.x");
        fs::write(&stale, "ancient").unwrap();
        let past = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(past)
            .unwrap();
        assert!(!recover_interrupted_write(&p).unwrap());
        assert_eq!(fs::read_to_string(&p).unwrap(), "new");
        assert!(!stale.exists());
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
