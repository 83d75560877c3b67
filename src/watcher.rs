//! File watching: wakes a profile's refresher when its refresh-token file is
//! written (e.g. by a new login), so a profile stuck in `login_required`
//! recovers at once without a restart.
//!
//! The *parent directory* is watched, not the file: writers (including our
//! own atomic writes and most editors) replace the file by rename, which a
//! watch on the old inode would miss. Events are filtered by file name and
//! bridged from notify's thread with a non-blocking `try_send` (a full channel
//! already holds a pending wake).

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

use crate::refresher::Wake;

/// Keeps the OS watch alive; dropping it stops watching.
pub struct FileWatcher {
    _inner: notify::RecommendedWatcher,
}

type Targets = HashMap<PathBuf, Vec<(OsString, mpsc::Sender<Wake>)>>;

/// Watch each file's directory and send [`Wake::TokenFileChanged`] to its
/// refresher when the file changes.
pub fn watch(files: Vec<(PathBuf, mpsc::Sender<Wake>)>) -> notify::Result<FileWatcher> {
    let mut targets: Targets = HashMap::new();
    for (file, tx) in files {
        let (Some(dir), Some(name)) = (file.parent(), file.file_name()) else {
            continue;
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        targets
            .entry(dir.to_path_buf())
            .or_default()
            .push((name.to_os_string(), tx));
    }
    let dirs: Vec<PathBuf> = targets.keys().cloned().collect();
    let handler = move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        if ev.kind.is_access() {
            return;
        }
        for p in &ev.paths {
            let (Some(dir), Some(name)) = (p.parent(), p.file_name()) else {
                continue;
            };
            if let Some(list) = targets.get(dir) {
                for (n, tx) in list {
                    if n == name {
                        let _ = tx.try_send(Wake::TokenFileChanged);
                    }
                }
            }
        }
    };
    let mut w = notify::recommended_watcher(handler)?;
    for d in dirs {
        if let Err(e) = w.watch(&d, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %d.display(), error = %e, "cannot watch directory; use SIGHUP after writing a new refresh token");
        }
    }
    Ok(FileWatcher { _inner: w })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn atomic_replace_wakes_the_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a-token");
        let b = dir.path().join("b-token");
        let (ta, mut ra) = mpsc::channel(4);
        let (tb, mut rb) = mpsc::channel(4);
        let _w = watch(vec![(a.clone(), ta), (b.clone(), tb)]).unwrap();
        crate::fsutil::write_atomic_private(&a, b"new").unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), ra.recv())
            .await
            .unwrap();
        assert_eq!(got, Some(Wake::TokenFileChanged));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(rb.try_recv().is_err());
    }
}
