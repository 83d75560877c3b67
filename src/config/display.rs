//! The resolved configuration as TOML (`credbroker check-config`).

use std::fmt;
use std::path::Path;

use super::*;

fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn p(p: &Path) -> String {
    q(&p.display().to_string())
}

impl fmt::Display for Config {
    /// The resolved configuration as TOML. Secrets are never inline in the
    /// config, so only paths appear; nothing here needs redaction beyond that.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "# resolved from {}", self.source.display())?;
        writeln!(f, "[server]")?;
        writeln!(f, "listen = {}", q(&self.server.listen.to_string()))?;
        writeln!(f, "ecs_token_file = {}", p(&self.server.ecs_token_file))?;
        writeln!(f, "runtime_dir = {}", p(&self.server.runtime_dir))?;
        writeln!(f, "imds = {}", self.server.imds)?;
        writeln!(f, "imds_v1 = {}", self.server.imds_v1)?;
        writeln!(f, "imds_profile = {}", q(&self.server.imds_profile))?;
        let hosts: Vec<String> = self.server.allowed_hosts.iter().map(|h| q(h)).collect();
        writeln!(f, "allowed_hosts = [{}]", hosts.join(", "))?;
        writeln!(f, "strict_permissions = {}", self.server.strict_permissions)?;
        writeln!(
            f,
            "desktop_notifications = {}",
            self.server.desktop_notifications
        )?;
        writeln!(f, "allowed_uids = {}", access(&self.server.allowed_uids))?;
        writeln!(
            f,
            "ecs_token_group_readable = {}",
            self.server.ecs_token_group_readable
        )?;
        if let Some(a) = self.server.metrics_listen {
            writeln!(f, "metrics_listen = {}", q(&a.to_string()))?;
        }
        writeln!(f, "\n[log]")?;
        writeln!(f, "format = {}", q(self.log.format.as_str()))?;
        writeln!(f, "level = {}", q(&self.log.level))?;
        writeln!(f, "\n[audit]")?;
        match &self.audit {
            crate::audit::AuditLog::Off => writeln!(f, "log = \"off\"")?,
            crate::audit::AuditLog::Journal => writeln!(f, "log = \"journal\"")?,
            crate::audit::AuditLog::File { path, max_bytes } => {
                writeln!(f, "log = {}", q(&path.display().to_string()))?;
                writeln!(f, "max_size = {max_bytes}")?;
            }
        }
        for (name, pr) in &self.profiles {
            writeln!(f, "\n[profiles.{name}]")?;
            writeln!(f, "region = {}", q(&pr.region))?;
            if let Some(u) = &pr.endpoint_url {
                writeln!(f, "endpoint_url = {}", q(u.as_str()))?;
            }
            writeln!(f, "role_name = {}", q(&pr.role_name))?;
            if let Some(a) = pr.imds_listen {
                writeln!(f, "imds_listen = {}", q(&a.to_string()))?;
            }
            if let Some(a) = &pr.allowed_uids {
                writeln!(f, "allowed_uids = {}", access(a))?;
            }
            writeln!(
                f,
                "refresh_before = {}",
                q(&humantime::format_duration(pr.refresh_before).to_string())
            )?;
            writeln!(f, "state_dir = {}", p(&pr.state_dir))?;
            writeln!(f, "\n[profiles.{name}.login]")?;
            write_login(f, pr)?;
            writeln!(f, "\n[profiles.{name}.aws]")?;
            write_aws(f, &pr.aws)?;
        }
        Ok(())
    }
}

/// `[profiles.NAME.login]`: the keys of its kind, and its sign-in keys.
fn write_login(f: &mut fmt::Formatter<'_>, pr: &ProfileConfig) -> fmt::Result {
    writeln!(f, "kind = {}", q(pr.login.kind()))?;
    match &pr.login {
        LoginConfig::Oidc(o) => {
            if let Some(i) = &o.issuer {
                writeln!(f, "issuer = {}", q(i.as_str()))?;
            }
            if let Some(t) = &o.token_endpoint {
                writeln!(f, "token_endpoint = {}", q(t.as_str()))?;
            }
            writeln!(f, "client_id = {}", q(&o.client_id))?;
            if let Some(s) = &o.client_secret_file {
                writeln!(f, "client_secret_file = {}", p(s))?;
            }
            writeln!(f, "refresh_token_file = {}", p(&o.refresh_token_file))?;
            writeln!(f, "token_store = {}", q(o.token_store.as_str()))?;
            if o.guest_until_login {
                writeln!(f, "guest_until_login = true")?;
            }
            if let Some(s) = &o.scopes {
                let s: Vec<String> = s.iter().map(|x| q(x)).collect();
                writeln!(f, "scopes = [{}]", s.join(", "))?;
            }
            writeln!(
                f,
                "prompt = {}",
                q(pr.sign_in.prompt.as_deref().unwrap_or(""))
            )?;
            if let Some(r) = &pr.sign_in.redirect_uri {
                writeln!(f, "redirect_uri = {}", q(r.as_str()))?;
            }
        }
        LoginConfig::UserPool(u) => {
            writeln!(f, "user_pool_id = {}", q(&u.user_pool_id))?;
            writeln!(f, "client_id = {}", q(&u.client_id))?;
            if let Some(s) = &u.client_secret_file {
                writeln!(f, "client_secret_file = {}", p(s))?;
            }
            if let Some(s) = &u.username {
                writeln!(f, "username = {}", q(s))?;
            }
            writeln!(f, "refresh_token_file = {}", p(&u.refresh_token_file))?;
            writeln!(f, "token_store = {}", q(u.token_store.as_str()))?;
            if u.guest_until_login {
                writeln!(f, "guest_until_login = true")?;
            }
            if let Some(r) = u.rotation {
                writeln!(f, "rotation = {r}")?;
            }
            writeln!(f, "auth_flow = {}", q(pr.sign_in.auth_flow.as_str()))?;
            if let Some(h) = &pr.sign_in.hosted_ui {
                write_hosted_ui(f, h, &pr.sign_in)?;
            }
        }
        LoginConfig::None => {}
    }
    Ok(())
}

/// The keys only a user pool's hosted UI uses.
fn write_hosted_ui(f: &mut fmt::Formatter<'_>, h: &HostedUi, s: &SignIn) -> fmt::Result {
    writeln!(f, "domain = {}", q(h.domain.as_str()))?;
    if let Some(sc) = &h.scopes {
        let sc: Vec<String> = sc.iter().map(|x| q(x)).collect();
        writeln!(f, "scopes = [{}]", sc.join(", "))?;
    }
    if let Some(i) = &h.identity_provider {
        writeln!(f, "identity_provider = {}", q(i))?;
    }
    writeln!(f, "prompt = {}", q(s.prompt.as_deref().unwrap_or("")))?;
    if let Some(r) = &s.redirect_uri {
        writeln!(f, "redirect_uri = {}", q(r.as_str()))?;
    }
    Ok(())
}

/// `[profiles.NAME.aws]`: the keys the flow uses.
fn write_aws(f: &mut fmt::Formatter<'_>, a: &AwsConfig) -> fmt::Result {
    writeln!(f, "flow = {}", q(a.flow_name()))?;
    let account = a
        .pool()
        .and_then(|p| p.account_id.as_ref())
        .or_else(|| a.role().and_then(|r| r.account_id.as_ref()));
    for (key, val) in [
        ("identity_pool_id", a.pool().map(|p| &p.identity_pool_id)),
        ("account_id", account),
        (
            "login_provider",
            a.pool().and_then(|p| p.login_provider.as_ref()),
        ),
    ] {
        if let Some(val) = val {
            writeln!(f, "{key} = {}", q(val))?;
        }
    }
    if let Some(arn) = a.role_arn() {
        writeln!(f, "role_arn = {}", q(arn))?;
    }
    if let Some(r) = a.role() {
        writeln!(f, "session_name = {}", q(&r.session_name))?;
        if let Some(d) = r.duration {
            writeln!(
                f,
                "duration = {}",
                q(&humantime::format_duration(d).to_string())
            )?;
        }
        if let Some(s) = &r.session_policy_file {
            writeln!(f, "session_policy_file = {}", p(s))?;
        }
    }
    if let Some(id) = a.identity_id_file() {
        writeln!(f, "# identity id cache: {}", id.display())?;
    }
    Ok(())
}

/// `["any"]` or `["1000", "0"]` (uids as strings: the list form reloads).
fn access(a: &Access) -> String {
    match a {
        Access::Any => "[\"any\"]".into(),
        Access::Uids(u) => format!(
            "[{}]",
            u.iter()
                .map(|u| format!("\"{u}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
