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

/// Create `dir` (and parents) with mode 0700 if it does not exist, and check
/// that it is really ours ([`check_private_dir`]).
///
/// The check matters for directories in shared places (`/tmp/credbroker-UID`
/// when `XDG_RUNTIME_DIR` is unset): a local user who creates the directory
/// first would own the ECS token file and `daemon.json` written into it.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut b = fs::DirBuilder::new();
            b.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
            b.create(dir)?;
        }
        Err(e) => return Err(e),
        Ok(_) => {}
    }
    // Checked after creating too: someone may have won the race.
    check_private_dir(dir)
}

/// Refuse a directory that another user owns or may write to (or a symlink
/// another user owns), with an error that names the path and the fix.
pub fn check_private_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        let me = current_uid();
        let link = fs::symlink_metadata(dir)?;
        if link.file_type().is_symlink() && link.uid() != me && link.uid() != 0 {
            return Err(unsafe_path(
                dir,
                format!(
                    "is a symlink owned by uid {} (not by you, uid {me}); remove it",
                    link.uid()
                ),
            ));
        }
        let m = fs::metadata(dir)?;
        if !m.is_dir() {
            return Err(unsafe_path(dir, "is not a directory".into()));
        }
        // Root-owned directories are trusted (root can read everything anyway).
        if m.uid() != me && m.uid() != 0 {
            return Err(unsafe_path(
                dir,
                format!(
                    "is owned by uid {} (not by you, uid {me}): another user may have created it \
                     to take over the files written there; remove it, or choose another directory",
                    m.uid()
                ),
            ));
        }
        let mode = m.permissions().mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(unsafe_path(
                dir,
                format!(
                    "is writable by group or others (mode {mode:o}); run: chmod 700 {}",
                    dir.display()
                ),
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// An error about an unsafe path: `PermissionDenied`, message names the path.
fn unsafe_path(path: &Path, what: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("{} {what}", path.display()),
    )
}

/// Atomically replace `path` with `contents`, mode 0600.
///
/// The temp file lives in the same directory (so `rename` is atomic), is
/// created exclusively, fsynced before the rename, and the directory is fsynced
/// after it, so a crash leaves either the old or the new file, never a mix.
pub fn write_atomic_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    PreparedWrite::new(path)?.commit(contents)
}

/// A [`write_atomic_private`] whose temp file is created ahead of time, so
/// that when the contents arrive only `write` stands between them and a
/// file a crash can recover (see [`recover_interrupted_write`]); the fsync
/// and rename follow. Used for a rotating refresh token: prepared before the
/// IdP is asked, committed with its answer. Dropped uncommitted, the (empty)
/// temp file is removed; a killed process leaves an empty one, which
/// recovery removes.
#[derive(Debug)]
pub struct PreparedWrite {
    file: Option<File>,
    tmp: PathBuf,
    path: PathBuf,
    dir: PathBuf,
}

impl PreparedWrite {
    /// Create the temp file for a later write of `path` (its directory must
    /// be private: checked, or created 0700).
    pub fn new(path: &Path) -> io::Result<Self> {
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
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        opts.mode(0o600);
        let file = opts.open(&tmp)?;
        Ok(PreparedWrite {
            file: Some(file),
            tmp,
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
        })
    }

    /// Write `contents`, fsync, rename over the target, fsync the directory.
    pub fn commit(mut self, contents: &[u8]) -> io::Result<()> {
        let Some(mut f) = self.file.take() else {
            return Err(io::Error::other("already committed"));
        };
        let result = (|| {
            f.write_all(contents)?;
            f.sync_all()?;
            drop(f);
            fs::rename(&self.tmp, &self.path)?;
            if let Ok(d) = File::open(&self.dir) {
                // Directory fsync makes the rename itself durable.
                let _ = d.sync_all();
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&self.tmp);
        }
        result
    }
}

impl Drop for PreparedWrite {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
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

/// What to do with a secret file that group or others can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readable {
    /// Log a warning (once per file and change of the file).
    Warn,
    /// Refuse to use it (`server.strict_permissions = true`).
    Refuse,
}

// The policy is the daemon's (or CLI's) one setting, fixed at start-up from
// the config; a process-wide value spares threading it through every
// component that reads a secret file.
static STRICT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Set the process-wide policy for readable secret files.
pub fn set_readable_policy(p: Readable) {
    STRICT.store(p == Readable::Refuse, std::sync::atomic::Ordering::Relaxed);
}

fn readable_policy() -> Readable {
    if STRICT.load(std::sync::atomic::Ordering::Relaxed) {
        Readable::Refuse
    } else {
        Readable::Warn
    }
}

/// Read a secret file; trailing whitespace (an editor's newline) is removed.
/// Refused when another user owns it (root excepted) or group/others may
/// write it; when group/others may read it, warned about once per file and
/// change, or refused under [`Readable::Refuse`] (the process-wide policy).
pub fn read_secret_file(path: &Path) -> io::Result<String> {
    read_secret_file_with(path, readable_policy())
}

/// [`read_secret_file`] with an explicit policy.
pub fn read_secret_file_with(path: &Path, policy: Readable) -> io::Result<String> {
    let raw = fs::read_to_string(path)?;
    check_secret_file(path, policy)?;
    Ok(raw.trim_end().to_owned())
}

/// [`read_secret_file`] for a file meant to be shared with its group (the
/// ECS token with `server.ecs_token_group_readable`): the group may read it
/// without a warning; everything else is checked as usual.
pub fn read_group_shared_secret_file(path: &Path) -> io::Result<String> {
    let raw = fs::read_to_string(path)?;
    check_mode(path, readable_policy(), 0o004)?;
    Ok(raw.trim_end().to_owned())
}

/// Let the group read `path` (and enter it, for a directory), when it is
/// ours: 0600 → 0640, 0700 → 0750. Never adds write access. A file or
/// directory of another owner (root's mount point) is left as it is.
pub fn share_with_group(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        let m = fs::metadata(path)?;
        if m.uid() == current_uid() {
            let add = if m.is_dir() { 0o050 } else { 0o040 };
            let mode = m.permissions().mode() & 0o7777;
            if mode & add != add {
                fs::set_permissions(path, fs::Permissions::from_mode(mode | add))?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Warned-about files: path → (fingerprint, mode) at the time of the warning.
type Warned = std::collections::HashMap<PathBuf, (Option<(u64, u64, i64, i64)>, u32)>;
static WARNED: std::sync::Mutex<Option<Warned>> = std::sync::Mutex::new(None);

/// The ownership and mode rules of [`read_secret_file`].
pub fn check_secret_file(path: &Path, policy: Readable) -> io::Result<()> {
    check_mode(path, policy, 0o044)
}

/// [`check_secret_file`], judging only the read bits in `read_bits`.
fn check_mode(path: &Path, policy: Readable, read_bits: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        let m = fs::metadata(path)?;
        let me = current_uid();
        if m.uid() != me && m.uid() != 0 {
            return Err(unsafe_path(
                path,
                format!(
                    "is owned by uid {} (not by you, uid {me}, nor root); another user may have \
                     planted it: remove it or take ownership",
                    m.uid()
                ),
            ));
        }
        let mode = m.permissions().mode() & 0o777;
        if mode & 0o022 != 0 {
            return Err(unsafe_path(
                path,
                format!(
                    "is writable by group or others (mode {mode:o}); run: chmod 600 {}",
                    path.display()
                ),
            ));
        }
        if mode & read_bits != 0 {
            if policy == Readable::Refuse {
                return Err(unsafe_path(
                    path,
                    format!(
                        "is readable by group or others (mode {mode:o}) and \
                         server.strict_permissions is on; run: chmod 600 {}",
                        path.display()
                    ),
                ));
            }
            let key = (fingerprint(path), mode);
            let mut warned = WARNED.lock().unwrap_or_else(|p| p.into_inner());
            let map = warned.get_or_insert_with(Default::default);
            if map.get(path) != Some(&key) {
                map.insert(path.to_path_buf(), key);
                tracing::warn!(
                    path = %path.display(),
                    mode = format_args!("{mode:o}"),
                    "secret file is readable by group or others; run: chmod 600 {}",
                    path.display()
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (path, policy, read_bits);
    Ok(())
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
        // No temp files left behind.
        let n = fs::read_dir(p.parent().unwrap()).unwrap().count();
        assert_eq!(n, 1);
    }

    /// A prepared write: its temp file exists (empty, 0600) until it is
    /// committed or dropped; a process killed before writing into it leaves
    /// an empty one, which recovery removes (a written one is rolled
    /// forward: `interrupted_writes_roll_forward_and_stale_ones_are_dropped`).
    #[test]
    fn a_prepared_write_commits_or_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rt");
        fs::write(&p, "old").unwrap();
        let temps = || {
            fs::read_dir(dir.path())
                .unwrap()
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with(".rt.tmp."))
                .map(|e| e.path())
                .collect::<Vec<_>>()
        };
        let w = PreparedWrite::new(&p).unwrap();
        let t = temps();
        assert_eq!(t.len(), 1);
        assert_eq!(fs::metadata(&t[0]).unwrap().len(), 0);
        #[cfg(unix)]
        assert_eq!(
            fs::metadata(&t[0]).unwrap().permissions().mode() & 0o777,
            0o600
        );
        drop(w);
        assert!(
            temps().is_empty(),
            "a dropped prepared write left its temp file"
        );
        assert_eq!(fs::read_to_string(&p).unwrap(), "old");
        PreparedWrite::new(&p).unwrap().commit(b"new").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "new");
        assert!(temps().is_empty());
        // A process killed with a prepared, unwritten temp file: recovery
        // removes it and keeps the token.
        std::mem::forget(PreparedWrite::new(&p).unwrap());
        assert_eq!(temps().len(), 1);
        assert!(!recover_interrupted_write(&p).unwrap());
        assert_eq!(fs::read_to_string(&p).unwrap(), "new");
        assert!(temps().is_empty());
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
    fn secret_read_trims_newline_and_applies_the_readable_policy() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        fs::write(&p, "tok\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret_file_with(&p, Readable::Refuse).unwrap(), "tok");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_secret_file_with(&p, Readable::Warn).unwrap(), "tok");
        let e = read_secret_file_with(&p, Readable::Refuse).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        let msg = e.to_string();
        assert!(
            msg.contains(&p.display().to_string()) && msg.contains("chmod 600"),
            "{msg}"
        );
        assert!(!msg.contains("tok"), "{msg}");
        // Writable by others is refused under either policy.
        fs::set_permissions(&p, fs::Permissions::from_mode(0o622)).unwrap();
        let e = read_secret_file_with(&p, Readable::Warn).unwrap_err();
        assert!(e.to_string().contains("writable by group or others"), "{e}");
    }

    #[test]
    fn a_readable_secret_file_is_warned_about_once_per_change() {
        #[derive(Clone, Default)]
        struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .finish();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rt");
        fs::write(&p, "tok").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        let warnings = || {
            String::from_utf8(buf.0.lock().unwrap().clone())
                .unwrap()
                .matches("readable by group or others")
                .count()
        };
        tracing::subscriber::with_default(sub, || {
            for _ in 0..5 {
                read_secret_file_with(&p, Readable::Warn).unwrap();
            }
            assert_eq!(warnings(), 1, "one warning for five reads of the same file");
            // A change of the file (new content, new mode) is warned about again.
            std::thread::sleep(std::time::Duration::from_millis(10));
            fs::write(&p, "tok2").unwrap();
            read_secret_file_with(&p, Readable::Warn).unwrap();
            read_secret_file_with(&p, Readable::Warn).unwrap();
            assert_eq!(warnings(), 2);
            fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
            read_secret_file_with(&p, Readable::Warn).unwrap();
            assert_eq!(warnings(), 3);
        });
    }

    #[test]
    fn foreign_or_open_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("run");
        ensure_private_dir(&d).unwrap();
        assert_eq!(
            fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700
        );
        ensure_private_dir(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o777)).unwrap();
        let e = ensure_private_dir(&d).unwrap_err();
        assert!(
            e.to_string().contains("chmod 700") && e.to_string().contains(&d.display().to_string()),
            "{e}"
        );
        // A file where a directory should be.
        let f = dir.path().join("file");
        fs::write(&f, "").unwrap();
        assert!(
            ensure_private_dir(&f)
                .unwrap_err()
                .to_string()
                .contains("not a directory")
        );
        // Owned by another user: only testable as root (chown needs it).
        if current_uid() == 0 {
            let other = dir.path().join("other");
            fs::create_dir(&other).unwrap();
            fs::set_permissions(&other, fs::Permissions::from_mode(0o700)).unwrap();
            std::os::unix::fs::chown(&other, Some(4242), Some(4242)).unwrap();
            let e = ensure_private_dir(&other).unwrap_err();
            assert!(e.to_string().contains("owned by uid 4242"), "{e}");
            let planted = dir.path().join("planted");
            fs::write(&planted, "x").unwrap();
            fs::set_permissions(&planted, fs::Permissions::from_mode(0o600)).unwrap();
            std::os::unix::fs::chown(&planted, Some(4242), Some(4242)).unwrap();
            let e = read_secret_file_with(&planted, Readable::Warn).unwrap_err();
            assert!(e.to_string().contains("owned by uid 4242"), "{e}");
        }
    }
}
