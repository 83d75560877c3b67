//! What a reload changes: profiles added, removed and changed (and whether a
//! change is to the identity the credentials belong to), live server
//! settings, and settings that need a restart.

use super::{Config, ProfileConfig, ServerConfig};

/// How a profile changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileChange {
    /// Who the credentials belong to changed (login, flow, role, account,
    /// pool, region, endpoint, state): the old credentials must not be served
    /// one moment longer.
    Identity,
    /// Only how they are served or refreshed changed (IMDS role name or port,
    /// `refresh_before`, STS session name, duration, policy): the old
    /// credentials are served until the new ones are in hand.
    Settings,
}

/// The difference between a running config and a new one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    /// Profiles only in the new config.
    pub added: Vec<String>,
    /// Profiles only in the old config.
    pub removed: Vec<String>,
    /// Profiles in both, with different settings.
    pub changed: Vec<(String, ProfileChange)>,
    /// `server` keys applied live (`imds`, `imds_v1`, `imds_profile`,
    /// `allowed_hosts`, `strict_permissions`) that differ.
    pub server_live: Vec<&'static str>,
    /// `server` keys that differ but only take effect after a restart.
    pub restart_needed: Vec<&'static str>,
}

impl ConfigDiff {
    /// What changes from `old` to `new`.
    pub fn between(old: &Config, new: &Config) -> ConfigDiff {
        let mut d = ConfigDiff::default();
        for (name, p) in &new.profiles {
            match old.profiles.get(name) {
                None => d.added.push(name.clone()),
                Some(o) if !same_serving(o, p) => {
                    d.changed.push((name.clone(), profile_change(o, p)))
                }
                Some(_) => {}
            }
        }
        d.removed = old
            .profiles
            .keys()
            .filter(|n| !new.profiles.contains_key(*n))
            .cloned()
            .collect();
        server_changes(&old.server, &new.server, &mut d);
        // The subscriber is installed once, at start.
        if old.log.format != new.log.format {
            d.restart_needed.push("log.format");
        }
        if old.log.level != new.log.level {
            d.restart_needed.push("log.level");
        }
        // The writer thread and its file are set up once, at start.
        if old.audit != new.audit {
            d.restart_needed.push("audit");
        }
        d
    }

    /// Nothing changed at all.
    pub fn is_empty(&self) -> bool {
        *self == ConfigDiff::default()
    }
}

/// Equal but for the sign-in settings, which only `credbroker login` reads.
fn same_serving(o: &ProfileConfig, n: &ProfileConfig) -> bool {
    o.name == n.name && {
        let mut n = n.clone();
        n.sign_in = o.sign_in.clone();
        *o == n
    }
}

fn server_changes(o: &ServerConfig, n: &ServerConfig, d: &mut ConfigDiff) {
    let live = [
        ("server.imds", o.imds != n.imds),
        ("server.imds_v1", o.imds_v1 != n.imds_v1),
        ("server.imds_profile", o.imds_profile != n.imds_profile),
        ("server.allowed_hosts", o.allowed_hosts != n.allowed_hosts),
        (
            "server.strict_permissions",
            o.strict_permissions != n.strict_permissions,
        ),
        ("server.allowed_uids", o.allowed_uids != n.allowed_uids),
    ];
    d.server_live = live.iter().filter(|(_, c)| *c).map(|(k, _)| *k).collect();
    let restart = [
        ("server.listen", o.listen != n.listen),
        (
            "server.ecs_token_file",
            o.ecs_token_file != n.ecs_token_file,
        ),
        ("server.runtime_dir", o.runtime_dir != n.runtime_dir),
        (
            "server.ecs_token_group_readable",
            o.ecs_token_group_readable != n.ecs_token_group_readable,
        ),
        (
            "server.metrics_listen",
            o.metrics_listen != n.metrics_listen,
        ),
        (
            "server.desktop_notifications",
            o.desktop_notifications != n.desktop_notifications,
        ),
    ];
    d.restart_needed = restart
        .iter()
        .filter(|(_, c)| *c)
        .map(|(k, _)| *k)
        .collect();
}

/// Identity unless only the serving/refresh settings differ.
fn profile_change(o: &ProfileConfig, n: &ProfileConfig) -> ProfileChange {
    let same_identity = o.region == n.region
        && o.endpoint_url == n.endpoint_url
        && o.state_dir == n.state_dir
        // Who may read them: applied at once, like an identity change.
        && o.allowed_uids == n.allowed_uids
        && o.login == n.login
        && o.aws.identity() == n.aws.identity()
        && o.aws.role().map(|r| &r.account_id) == n.aws.role().map(|r| &r.account_id);
    if same_identity {
        ProfileChange::Settings
    } else {
        ProfileChange::Identity
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Env, load_str};
    use std::path::Path;

    const BASE: &str = r#"
[server]
listen = "127.0.0.1:9911"
[profiles.default]
region = "us-east-1"
login = { kind = "none" }
aws = { flow = "cognito", identity_pool_id = "us-east-1:a" }
[profiles.dev]
region = "us-east-1"
login = { kind = "none" }
aws = { flow = "cognito-basic", identity_pool_id = "us-east-1:b", role_arn = "arn:aws:iam::123456789012:role/A" }
"#;

    fn cfg(text: &str) -> Config {
        let env = Env::from([("HOME".to_owned(), "/home/u".to_owned())]);
        load_str(text, Path::new("c.toml"), &env).unwrap()
    }

    #[test]
    fn identical_configs_have_no_diff() {
        assert!(ConfigDiff::between(&cfg(BASE), &cfg(BASE)).is_empty());
    }

    #[test]
    fn added_removed_and_changed_profiles() {
        let new = BASE.replace("[profiles.dev]", "[profiles.qa]").replace(
            "identity_pool_id = \"us-east-1:a\"",
            "identity_pool_id = \"us-east-1:a2\"",
        );
        let d = ConfigDiff::between(&cfg(BASE), &cfg(&new));
        assert_eq!(d.added, vec!["qa"]);
        assert_eq!(d.removed, vec!["dev"]);
        assert_eq!(d.changed, vec![("default".into(), ProfileChange::Identity)]);
        assert!(d.server_live.is_empty() && d.restart_needed.is_empty());
    }

    #[test]
    fn role_changes_are_identity_changes_and_serving_settings_are_not() {
        let role = BASE.replace("role/A", "role/B");
        let d = ConfigDiff::between(&cfg(BASE), &cfg(&role));
        assert_eq!(d.changed, vec![("dev".into(), ProfileChange::Identity)]);
        let settings = BASE.replace(
            "[profiles.dev]\n",
            "[profiles.dev]\nrole_name = \"other\"\nrefresh_before = \"10m\"\nimds_listen = \"127.0.0.1:9912\"\n",
        );
        let d = ConfigDiff::between(&cfg(BASE), &cfg(&settings));
        assert_eq!(d.changed, vec![("dev".into(), ProfileChange::Settings)]);
    }

    #[test]
    fn server_keys_are_live_or_need_a_restart() {
        let new = BASE.replace(
            "listen = \"127.0.0.1:9911\"",
            "listen = \"127.0.0.1:9999\"\nimds_v1 = true\nallowed_hosts = [\"x.local\"]\nimds_profile = \"dev\"",
        );
        let d = ConfigDiff::between(&cfg(BASE), &cfg(&new));
        assert_eq!(
            d.server_live,
            vec![
                "server.imds_v1",
                "server.imds_profile",
                "server.allowed_hosts"
            ]
        );
        assert_eq!(d.restart_needed, vec!["server.listen"]);
        assert!(d.changed.is_empty());
    }
}
