//! Local checks: the config, the secret files, their directories.

use std::path::Path;

#[cfg(unix)]
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::Report;
use crate::config::{self, Config, Env, LoginConfig, ProfileConfig};

/// `config`: load and validate; `None` (and a failing line) when invalid.
pub fn config(path: &Path, env: &Env, report: &mut Report) -> Option<Config> {
    match config::load(path, env) {
        Ok(cfg) => {
            report.pass(
                "config",
                "config",
                format!(
                    "valid; profiles: {}",
                    cfg.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            );
            Some(cfg)
        }
        Err(e) => {
            report.fail(
                "config",
                "config",
                e.to_string(),
                format!(
                    "edit {} (config/credbroker.example.toml documents every key), \
                     then run `credbroker check-config`",
                    path.display()
                ),
            );
            None
        }
    }
}

/// Which secret a file holds: its config key, title, and how to create it.
struct Secret<'a> {
    key: String,
    title: &'static str,
    path: &'a Path,
    create: String,
}

fn my_uid() -> u32 {
    #[cfg(unix)]
    {
        std::fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or(0)
    }
    #[cfg(not(unix))]
    0
}

/// What is wrong with a secret file, with its fix; `Ok(mode)` when nothing.
fn inspect(path: &Path, create: &str) -> Result<u32, (String, String)> {
    let shown = path.display();
    let m = std::fs::metadata(path).map_err(|e| {
        let what = if e.kind() == std::io::ErrorKind::NotFound {
            "does not exist".to_owned()
        } else {
            format!("cannot be read: {e}")
        };
        (format!("{shown} {what}"), create.to_owned())
    })?;
    if !m.is_file() {
        return Err((format!("{shown} is not a file"), create.to_owned()));
    }
    #[cfg(unix)]
    {
        let (uid, me) = (m.uid(), my_uid());
        if uid != me && uid != 0 {
            return Err((
                format!("{shown} is owned by uid {uid}, not by you (uid {me})"),
                format!("remove it and write it again yourself, or: chown {me} {shown}"),
            ));
        }
        let mode = m.permissions().mode() & 0o777;
        let chmod = format!("chmod 600 {shown}");
        if mode & 0o022 != 0 {
            return Err((
                format!(
                    "{shown} is writable by group or others (mode {mode:o}): the daemon refuses it"
                ),
                chmod,
            ));
        }
        if mode & 0o044 != 0 {
            return Err((
                format!(
                    "{shown} is readable by group or others (mode {mode:o}): other local users \
                     can read the secret (the daemon warns; server.strict_permissions refuses it)"
                ),
                chmod,
            ));
        }
        let empty = std::fs::read_to_string(path).is_ok_and(|t| t.trim().is_empty());
        if empty {
            return Err((format!("{shown} is empty"), create.to_owned()));
        }
        Ok(mode)
    }
    #[cfg(not(unix))]
    Ok(0)
}

fn secrets<'a>(cfg: &'a Config, profiles: &[&'a ProfileConfig]) -> Vec<Secret<'a>> {
    let mut out = Vec::new();
    for p in profiles {
        let n = &p.name;
        // With token_store = "keyring" no file is kept (the daemon check
        // below shows whether the keychain gave a token).
        if let Some(rt) = p.login.refresh_token_file()
            && p.login.token_store() != Some(crate::config::StoreKind::Keyring)
        {
            out.push(Secret {
                key: format!("profiles.{n}.login.refresh_token_file"),
                title: "refresh token",
                path: rt,
                create: format!(
                    "log in and store the refresh token: \
                     install -m 600 /dev/stdin {} <<< \"$REFRESH_TOKEN\"",
                    rt.display()
                ),
            });
        }
        if let LoginConfig::Oidc(o) = &p.login
            && let Some(cs) = &o.client_secret_file
        {
            out.push(Secret {
                key: format!("profiles.{n}.login.client_secret_file"),
                title: "client secret",
                path: cs,
                create: format!(
                    "write the OAuth client secret: install -m 600 /dev/stdin {} <<< \"$SECRET\"",
                    cs.display()
                ),
            });
        }
    }
    out.push(Secret {
        key: "server.ecs_token_file".into(),
        title: "ECS token",
        path: &cfg.server.ecs_token_file,
        create: format!(
            "delete {} and restart the daemon: it creates a strong one",
            cfg.server.ecs_token_file.display()
        ),
    });
    out
}

/// `secret:<key>`: every secret file exists, is ours, mode 0600, not empty.
pub fn secret_files(cfg: &Config, profiles: &[&ProfileConfig], report: &mut Report) {
    for s in secrets(cfg, profiles) {
        let id = format!("secret:{}", s.key);
        match inspect(s.path, &s.create) {
            Ok(mode) => report.pass(id, s.title, format!("{} (mode {mode:o})", s.path.display())),
            // The daemon creates its ECS token; before its first start there is none.
            Err(_) if s.key == "server.ecs_token_file" && !s.path.exists() => report.skip(
                id,
                s.title,
                format!(
                    "{} not created yet (the daemon creates it at start)",
                    s.path.display()
                ),
            ),
            Err((detail, fix)) => report.fail(id, s.title, format!("{}: {detail}", s.key), fix),
        }
    }
}

/// `dir:<key>`: the directories the daemon writes secrets and state into are
/// ours and not writable by others (the daemon refuses them otherwise).
pub fn private_dirs(cfg: &Config, profiles: &[&ProfileConfig], report: &mut Report) {
    let mut dirs: Vec<(String, &Path)> =
        vec![("server.runtime_dir".into(), &cfg.server.runtime_dir)];
    if let Some(d) = cfg.server.ecs_token_file.parent()
        && d != cfg.server.runtime_dir
    {
        dirs.push(("server.ecs_token_file".into(), d));
    }
    for p in profiles {
        if let Some(d) = p.login.refresh_token_file().and_then(Path::parent) {
            dirs.push((format!("profiles.{}.login.refresh_token_file", p.name), d));
        }
    }
    let mut seen = Vec::new();
    for (key, dir) in dirs {
        if seen.contains(&dir) {
            continue;
        }
        seen.push(dir);
        let id = format!("dir:{key}");
        match crate::fsutil::check_private_dir(dir) {
            Ok(()) => report.pass(id, "private directory", dir.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => report.skip(
                id,
                "private directory",
                format!(
                    "{} does not exist yet (created 0700 when needed)",
                    dir.display()
                ),
            ),
            Err(e) => report.fail(
                id,
                "private directory",
                format!("{key}: {e}"),
                format!(
                    "make it yours and private: chmod 700 {0} (or remove {0} and let the daemon \
                     create it)",
                    dir.display()
                ),
            ),
        }
    }
}
