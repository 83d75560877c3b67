//! File watching: wakes a profile's refresher when its refresh-token file is
//! written (e.g. by a new login), so a profile stuck in `login_required`
//! recovers at once without a restart; and asks the app to reload when the
//! config file changes.
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

#[cfg(doc)]
use crate::refresher::Wake;

/// Keeps the OS watch alive; dropping it stops watching.
pub struct FileWatcher {
    _inner: notify::RecommendedWatcher,
}

type Targets<T> = HashMap<PathBuf, Vec<(OsString, mpsc::Sender<T>, T)>>;

/// Watch each file's directory and send its message (for a refresh-token
/// file: [`Wake::TokenFileChanged`] to its refresher; for the config file: a
/// reload request) when the file changes. Kubernetes ConfigMap volumes swap
/// a `..data` symlink instead of writing the file, so a `..*` entry in the
/// directory counts as a change of every file watched there.
pub fn watch<T: Clone + Send + 'static>(
    files: Vec<(PathBuf, mpsc::Sender<T>, T)>,
) -> notify::Result<FileWatcher> {
    let mut targets: Targets<T> = HashMap::new();
    for (file, tx, msg) in files {
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
            .push((name.to_os_string(), tx, msg));
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
            let swap = name.to_string_lossy().starts_with("..");
            if let Some(list) = targets.get(dir) {
                for (n, tx, msg) in list {
                    if n == name || swap {
                        let _ = tx.try_send(msg.clone());
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
    use crate::refresher::Wake;
    use std::time::Duration;

    #[tokio::test]
    async fn atomic_replace_wakes_the_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a-token");
        let b = dir.path().join("b-token");
        let (ta, mut ra) = mpsc::channel(4);
        let (tb, mut rb) = mpsc::channel(4);
        let _w = watch(vec![
            (a.clone(), ta, Wake::TokenFileChanged),
            (b.clone(), tb, Wake::TokenFileChanged),
        ])
        .unwrap();
        crate::fsutil::write_atomic_private(&a, b"new").unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), ra.recv())
            .await
            .unwrap();
        assert_eq!(got, Some(Wake::TokenFileChanged));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(rb.try_recv().is_err());
    }
}
