// Unit tests of loading and validation.

use super::*;
use std::path::{Path, PathBuf};

fn env() -> Env {
    let mut e = Env::new();
    e.insert("HOME".into(), "/home/u".into());
    e.insert("XDG_RUNTIME_DIR".into(), "/run/user/1000".into());
    e
}

fn load_str(toml: &str, env: &Env) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, toml).unwrap();
    load(&path, env).map_err(|mut e| {
        e.origin = e.origin.replace(&path.display().to_string(), "FILE");
        e
    })
}

const GOOD: &str = r#"
[profiles.default]
[profiles.default.login]
kind = "oidc"
issuer = "https://idp.example.com/"
client_id = "cli"
[profiles.default.aws]
flow = "cognito"
identity_pool_id = "eu-west-1:1234"
"#;

#[test]
fn defaults_are_applied() {
    let c = load_str(GOOD, &env()).unwrap();
    assert_eq!(c.server.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(
        c.server.ecs_token_file,
        PathBuf::from("/run/user/1000/credbroker/ecs-token")
    );
    assert!(c.server.imds && !c.server.imds_v1);
    assert_eq!(c.server.imds_profile, "default");
    let p = &c.profiles["default"];
    assert_eq!(p.region, "eu-west-1");
    assert_eq!(p.refresh_before, DEFAULT_REFRESH_BEFORE);
    assert_eq!(
        p.aws.pool().unwrap().login_provider.as_deref(),
        Some("idp.example.com")
    );
    assert_eq!(
        p.login.refresh_token_file().unwrap(),
        Path::new("/home/u/.local/state/credbroker/default/refresh-token")
    );
    assert_eq!(
        p.aws.identity_id_file().unwrap(),
        PathBuf::from("/home/u/.local/state/credbroker/default/identity-id")
    );
}

#[test]
fn env_overrides_win() {
    let mut e = env();
    e.insert("CREDBROKER__SERVER__IMDS_V1".into(), "true".into());
    e.insert("CREDBROKER__SERVER__LISTEN".into(), "127.0.0.1:0".into());
    e.insert(
        "CREDBROKER__SERVER__ALLOWED_HOSTS".into(),
        "a.local:1,b.local".into(),
    );
    let c = load_str(GOOD, &e).unwrap();
    assert!(c.server.imds_v1);
    assert_eq!(c.server.listen.port(), 0);
    assert_eq!(c.server.allowed_hosts, vec!["a.local:1", "b.local"]);
}

fn err_of(toml: &str) -> ConfigError {
    load_str(toml, &env()).unwrap_err()
}

#[test]
fn errors_name_file_and_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            &GOOD.replace("flow = \"cognito\"", "flw = \"cognito\""),
            "profiles.default.aws.flw",
            "unknown field",
        ),
        (
            &GOOD.replace("identity_pool_id = \"eu-west-1:1234\"", ""),
            "profiles.default.aws.identity_pool_id",
            "required",
        ),
        (
            &format!("{GOOD}\n[server]\nlisten = \"0.0.0.0:80\"\n"),
            "server.listen",
            "loopback",
        ),
        (
            &format!("{GOOD}\n[server]\nlisten = \"nope\"\n"),
            "server.listen",
            "invalid address",
        ),
        (
            &GOOD.replace(
                "[profiles.default]",
                "[profiles.default]\nrefresh_before = \"soon\"",
            ),
            "profiles.default.refresh_before",
            "invalid duration",
        ),
        (
            &GOOD.replace("https://idp", "http://idp"),
            "profiles.default.login.issuer",
            "plain http",
        ),
        (
            &GOOD.replace("kind = \"oidc\"", "kind = \"saml\""),
            "profiles.default.login.kind",
            "unknown kind",
        ),
        (
            &GOOD.replace("flow = \"cognito\"", "flow = \"sts\""),
            "profiles.default.aws.identity_pool_id",
            "only used",
        ),
        (
            &format!("{GOOD}\n[server]\nimds_profile = \"x\"\n"),
            "server.imds_profile",
            "no profile named",
        ),
        (
            &format!("{GOOD}\n[server]\nimds_v1 = \"maybe\"\n"),
            "server.imds_v1",
            "",
        ),
        ("", "profiles", "at least one"),
    ];
    for (toml, key, msg) in cases {
        let e = err_of(toml);
        assert_eq!(e.origin, "FILE", "{e}");
        assert_eq!(e.key.as_deref(), Some(*key), "{e}");
        assert!(e.message.contains(msg), "{e}");
        assert!(e.to_string().starts_with(&format!("FILE: {key}: ")), "{e}");
    }
}

#[test]
fn env_errors_name_the_variable() {
    let mut e = env();
    e.insert("CREDBROKER__SERVER__IMDS".into(), "perhaps".into());
    let err = load_str(GOOD, &e).unwrap_err();
    assert_eq!(
        err.origin, "environment variable CREDBROKER__SERVER__IMDS",
        "{err}"
    );
    let mut e = env();
    e.insert("AWS_ENDPOINT_URL".into(), "http://10.0.0.1:5000".into());
    let err = load_str(GOOD, &e).unwrap_err();
    assert_eq!(err.origin, "environment variable AWS_ENDPOINT_URL", "{err}");
}

#[test]
fn profile_names_are_bare_keys_and_display_reloads() {
    let quoted = GOOD.replace("[profiles.default", "[profiles.\"dev.eu\"");
    let e = err_of(&quoted);
    assert_eq!(e.key.as_deref(), Some("profiles.dev.eu"), "{e}");
    // The check-config output is itself a loadable config with the same meaning.
    let c = super::load_str(GOOD, Path::new("a.toml"), &env()).unwrap();
    let again = super::load_str(&c.to_string(), Path::new("b.toml"), &env()).unwrap();
    assert_eq!(
        c.to_string().lines().skip(1).collect::<Vec<_>>(),
        again.to_string().lines().skip(1).collect::<Vec<_>>()
    );
}

#[test]
fn profiles_share_a_refresh_token_file_only_with_one_login() {
    let with_rt = |text: &str, rt: &str| {
        text.replacen(
            "kind = \"oidc\"",
            &format!("kind = \"oidc\"\nrefresh_token_file = \"{rt}\""),
            1,
        )
    };
    let dev = GOOD.replace("profiles.default", "profiles.dev");
    // One login (same settings, same file, spelled differently): accepted.
    let shared = format!(
        "{}{}",
        with_rt(GOOD, "/s/rt"),
        with_rt(&dev, "/s/./x/../rt")
    );
    let c = load_str(&shared, &env()).unwrap();
    assert_eq!(c.profiles.len(), 2);
    // The same file with another client: refused, naming both profiles.
    let other =
        with_rt(&dev, "/s/./x/../rt").replace("client_id = \"cli\"", "client_id = \"other\"");
    let e = err_of(&format!("{}{}", with_rt(GOOD, "/s/rt"), other));
    assert_eq!(e.key.as_deref(), Some("profiles.dev.login"), "{e}");
    assert!(e.message.contains("\"default\""), "{e}");
    assert!(!c.server.strict_permissions);
    let strict = format!("[server]\nstrict_permissions = true\n{GOOD}");
    assert!(load_str(&strict, &env()).unwrap().server.strict_permissions);
}

#[test]
fn ecs_token_group_readable_is_off_unless_asked_and_needs_a_restart() {
    let c = load_str(GOOD, &env()).unwrap();
    assert!(!c.server.ecs_token_group_readable);
    let shared = format!("[server]\necs_token_group_readable = true\n{GOOD}");
    let n = load_str(&shared, &env()).unwrap();
    assert!(n.server.ecs_token_group_readable);
    assert!(n.to_string().contains("ecs_token_group_readable = true"));
    let d = ConfigDiff::between(&c, &n);
    assert_eq!(d.restart_needed, vec!["server.ecs_token_group_readable"]);
}

#[test]
fn runtime_dir_falls_back_to_per_user_directories() {
    let mut e = env();
    e.remove("XDG_RUNTIME_DIR");
    assert_eq!(
        Dirs::from_env(&e).runtime,
        PathBuf::from("/home/u/.cache/credbroker")
    );
    e.insert("XDG_CACHE_HOME".into(), "/c".into());
    assert_eq!(Dirs::from_env(&e).runtime, PathBuf::from("/c/credbroker"));
    let tmp = format!("/tmp/credbroker-{}", crate::fsutil::current_uid());
    assert_eq!(Dirs::from_env(&Env::new()).runtime, PathBuf::from(&tmp));
    let mut e = Env::new();
    e.insert("HOME".into(), "/".into());
    assert_eq!(Dirs::from_env(&e).runtime, PathBuf::from(&tmp));
}

#[test]
fn missing_file_is_an_error() {
    let e = load(Path::new("/nonexistent/c.toml"), &env()).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/c.toml"));
}

#[test]
fn user_pool_defaults() {
    let c = load_str(
        r#"
[profiles.p1]
login = { kind = "cognito-user-pool", user_pool_id = "us-west-2_abc", client_id = "x" }
aws = { flow = "cognito-basic", identity_pool_id = "us-west-2:g", role_arn = "arn:aws:iam::123456789012:role/R", duration = "2h" }
"#,
        &env(),
    )
    .unwrap();
    let p = &c.profiles["p1"];
    assert_eq!(c.server.imds_profile, "p1");
    assert_eq!(
        p.aws.pool().unwrap().login_provider.as_deref(),
        Some("cognito-idp.us-west-2.amazonaws.com/us-west-2_abc")
    );
    assert_eq!(
        p.aws.configured_account_id().as_deref(),
        Some("123456789012")
    );
    assert_eq!(
        p.aws.role().unwrap().duration,
        Some(Duration::from_secs(7200))
    );
    // The Display form reloads to the same meaning.
    let shown = c.to_string();
    assert!(shown.contains("flow = \"cognito-basic\""));
}

mod example_tests {
    use super::*;

    /// The documented example must stay loadable.
    #[test]
    fn example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/credbroker.example.toml");
        let env = Env::from([("HOME".to_owned(), "/home/u".to_owned())]);
        let c = load(&path, &env).unwrap();
        assert_eq!(c.profiles["default"].aws.flow(), AwsFlow::Cognito);
    }
}

#[test]
fn sign_in_settings_are_checked_and_restart_nothing() {
    let base = |extra: &str| {
        format!(
            "[profiles.p]\nregion = \"us-east-1\"\n[profiles.p.login]\nkind = \"oidc\"\nissuer = \"https://idp.example\"\nclient_id = \"c\"\n{extra}\n\
             [profiles.p.aws]\nflow = \"sts\"\nrole_arn = \"arn:aws:iam::123456789012:role/R\"\n"
        )
    };
    let ok = load_str(&base(""), &env()).unwrap();
    assert_eq!(ok.profiles["p"].sign_in.prompt.as_deref(), Some("consent"));
    let none = load_str(&base("prompt = \"\""), &env()).unwrap();
    assert_eq!(none.profiles["p"].sign_in.prompt, None);
    for (extra, key) in [
        ("prompt = \"always\"", "login.prompt"),
        (
            "redirect_uri = \"http://192.0.2.1:80/cb\"",
            "login.redirect_uri",
        ),
        (
            "redirect_uri = \"https://127.0.0.1:8765/cb\"",
            "login.redirect_uri",
        ),
        (
            "redirect_uri = \"http://127.0.0.1/cb\"",
            "login.redirect_uri",
        ),
    ] {
        let e = load_str(&base(extra), &env()).unwrap_err().to_string();
        assert!(e.contains(key), "{extra}: {e}");
    }
    let fixed = load_str(
        &base("redirect_uri = \"http://127.0.0.1:8765/callback\""),
        &env(),
    )
    .unwrap();
    // Only `credbroker login` reads these: a reload that changes them restarts nothing.
    assert!(ConfigDiff::between(&ok, &fixed).is_empty());
}

#[test]
fn metrics_listen_and_log_are_validated() {
    let c = load_str(GOOD, &env()).unwrap();
    assert_eq!(c.server.metrics_listen, None);
    assert_eq!(c.log, LogConfig::default());
    let text = format!(
        "{GOOD}\n[server]\nmetrics_listen = \"0.0.0.0:9912\"\n[log]\nformat = \"json\"\nlevel = \"warn,credbroker=debug\"\n"
    );
    let c = load_str(&text, &env()).unwrap();
    assert_eq!(
        c.server.metrics_listen,
        Some("0.0.0.0:9912".parse().unwrap())
    );
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.log.level, "warn,credbroker=debug");
    // check-config's output reloads with the same meaning.
    let again = super::load_str(&c.to_string(), Path::new("b.toml"), &env()).unwrap();
    assert_eq!(
        (again.server.metrics_listen, again.log),
        (c.server.metrics_listen, c.log)
    );

    for (extra, key, says) in [
        (
            "[server]\nmetrics_listen = \"nope\"",
            "server.metrics_listen",
            "invalid address",
        ),
        (
            "[server]\nmetrics_listen = \"127.0.0.1:9911\"",
            "server.metrics_listen",
            "server.listen itself",
        ),
        (
            "[log]\nformat = \"xml\"",
            "log.format",
            "\"text\" or \"json\"",
        ),
        ("[log]\nlevel = \"loud\"", "log.level", "not a level"),
        (
            "[log]\nlevel = \"credbroker=verbose\"",
            "log.level",
            "invalid level",
        ),
        ("[log]\ncolour = true", "log.colour", "unknown field"),
    ] {
        let e = err_of(&format!("{GOOD}\n{extra}\n"));
        assert_eq!(e.key.as_deref(), Some(key), "{extra}: {e}");
        assert!(e.to_string().contains(says), "{extra}: {e}");
        assert!(e.to_string().starts_with("FILE: "), "{e}");
    }
}

#[test]
fn metrics_listen_and_log_changes_need_a_restart() {
    let old = load_str(GOOD, &env()).unwrap();
    let new = load_str(
        &format!(
            "{GOOD}\n[server]\nmetrics_listen = \"127.0.0.1:9912\"\n[log]\nformat = \"json\"\n"
        ),
        &env(),
    )
    .unwrap();
    let d = ConfigDiff::between(&old, &new);
    assert_eq!(
        d.restart_needed,
        vec!["server.metrics_listen", "log.format"]
    );
}

/// `login.token_store`, `login.guest_until_login` and `login.rotation`: the
/// values, the errors naming the key, and the check-config output.
#[test]
fn sign_in_storage_guest_and_rotation_keys() {
    let with =
        |extra: &str| GOOD.replacen("kind = \"oidc\"", &format!("kind = \"oidc\"\n{extra}"), 1);
    let c = load_str(
        &with("token_store = \"keyring\"\nguest_until_login = true"),
        &env(),
    )
    .unwrap();
    let login = &c.profiles["default"].login;
    assert_eq!(login.token_store(), Some(StoreKind::Keyring));
    assert!(login.guest_until_login());
    let shown = c.to_string();
    assert!(
        shown.contains("token_store = \"keyring\"") && shown.contains("guest_until_login = true"),
        "{shown}"
    );
    assert_eq!(
        load_str(GOOD, &env()).unwrap().profiles["default"]
            .login
            .token_store(),
        Some(StoreKind::File)
    );
    let e = err_of(&with("token_store = \"vault\""));
    assert_eq!(
        e.key.as_deref(),
        Some("profiles.default.login.token_store"),
        "{e}"
    );
    assert!(
        e.message.contains("\"vault\"") && e.message.contains("keyring"),
        "{e}"
    );
    // Guests are Cognito identities: not with the sts flow.
    let sts = with("guest_until_login = true").replace(
        "flow = \"cognito\"\nidentity_pool_id = \"eu-west-1:1234\"",
        "flow = \"sts\"\nrole_arn = \"arn:aws:iam::123456789012:role/R\"",
    );
    let e = err_of(&sts);
    assert_eq!(
        e.key.as_deref(),
        Some("profiles.default.login.guest_until_login"),
        "{e}"
    );
    // rotation is a user-pool setting.
    let e = err_of(&with("rotation = true"));
    assert_eq!(
        e.key.as_deref(),
        Some("profiles.default.login.rotation"),
        "{e}"
    );
    let pool = GOOD.replace(
        "kind = \"oidc\"\nissuer = \"https://idp.example.com/\"",
        "kind = \"cognito-user-pool\"\nuser_pool_id = \"eu-west-1_Abc\"\nrotation = true",
    );
    let c = load_str(&pool, &env()).unwrap();
    match &c.profiles["default"].login {
        LoginConfig::UserPool(u) => assert_eq!(u.rotation, Some(true)),
        other => panic!("{other:?}"),
    }
    assert!(c.to_string().contains("rotation = true"));
}

/// `login.domain` (a user pool's hosted UI) and the keys only it uses: the
/// prefix expansion, the errors naming the key, the round trip through
/// check-config, and that changing them restarts nothing.
#[test]
fn hosted_ui_keys() {
    let pool = |extra: &str| {
        GOOD.replace(
            "kind = \"oidc\"\nissuer = \"https://idp.example.com/\"",
            &format!("kind = \"cognito-user-pool\"\nuser_pool_id = \"eu-west-1_Abc\"\n{extra}"),
        )
    };
    let plain = load_str(&pool(""), &env()).unwrap();
    assert_eq!(plain.profiles["default"].sign_in.hosted_ui, None);
    assert_eq!(
        plain.profiles["default"].sign_in.auth_flow,
        PoolAuthFlow::Srp,
        "SRP by default: the password never leaves the machine"
    );
    let c = load_str(
        &pool(
            "domain = \"myapp\"\nredirect_uri = \"http://localhost:8765/callback\"\n\
             scopes = [\"email\"]\nidentity_provider = \"Google\"",
        ),
        &env(),
    )
    .unwrap();
    let s = &c.profiles["default"].sign_in;
    let h = s.hosted_ui.as_ref().unwrap();
    assert_eq!(
        h.domain.as_str(),
        "https://myapp.auth.eu-west-1.amazoncognito.com/"
    );
    assert_eq!(h.identity_provider.as_deref(), Some("Google"));
    assert_eq!(s.prompt, None, "Cognito gets no prompt unless asked");
    assert_eq!(
        crate::login::oidc::hosted_ui_scopes(h),
        "openid email",
        "openid added, offline_access never"
    );
    let again = super::load_str(&c.to_string(), Path::new("b.toml"), &env()).unwrap();
    assert_eq!(again.profiles["default"].sign_in, *s);
    assert!(ConfigDiff::between(&plain, &c).is_empty());

    for (extra, key, says) in [
        ("domain = \"myapp\"", "redirect_uri", "exactly"),
        ("scopes = [\"email\"]", "scopes", "login.domain"),
        (
            "redirect_uri = \"http://localhost:8765/callback\"",
            "redirect_uri",
            "login.domain",
        ),
        (
            "identity_provider = \"Google\"",
            "identity_provider",
            "login.domain",
        ),
        ("domain = \"My App\"", "domain", "prefix"),
        ("domain = \"-myapp\"", "domain", "prefix"),
        ("domain = \"my-cognito-app\"", "domain", "prefix"),
        (
            "domain = \"myapp\"\nredirect_uri = \"http://127.0.0.1:8765/callback\"",
            "redirect_uri",
            "only on localhost",
        ),
        (
            "domain = \"myapp\"\nredirect_uri = \"http://localhost:8765\"",
            "redirect_uri",
            "\"http://localhost:8765/\"",
        ),
        (
            "domain = \"myapp\"\nredirect_uri = \"http://localhost:8765/cb\"\nscopes = [\"offline_access\"]",
            "scopes",
            "invalid_scope",
        ),
        (
            "domain = \"myapp\"\nredirect_uri = \"http://localhost:8765/cb\"\nscopes = [\"email phone\"]",
            "scopes",
            "one non-empty word",
        ),
        ("domain = \"http://auth.example.com\"", "domain", "https"),
        (
            "domain = \"https://auth.example.com/oauth2/authorize\"",
            "domain",
            "path",
        ),
    ] {
        let e = err_of(&pool(extra));
        assert_eq!(
            e.key.as_deref(),
            Some(format!("profiles.default.login.{key}").as_str()),
            "{extra}: {e}"
        );
        assert!(e.message.contains(says), "{extra}: {e}");
    }
    let e = err_of(&GOOD.replacen("kind = \"oidc\"", "kind = \"oidc\"\ndomain = \"myapp\"", 1));
    assert_eq!(
        e.key.as_deref(),
        Some("profiles.default.login.domain"),
        "{e}"
    );
}
