use super::client::{Answer, DaemonClient, EcsCredentials};
use super::doctor::checks as doctor_checks;
use super::exec::{ChildToken, default_credential_keys, plan};
use super::*;
use crate::app::{DAEMON_FILE, DaemonInfo};

fn cfg(dir: &std::path::Path) -> Config {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:7777"
ecs_token_file = "{0}/my tokens/ecs-token"
runtime_dir = "{0}/run"
[profiles.default]
login = {{ kind = "none" }}
aws = {{ flow = "cognito", identity_pool_id = "us-east-1:x" }}
[profiles.dev]
region = "eu-west-1"
imds_listen = "127.0.0.1:7778"
login = {{ kind = "none" }}
aws = {{ flow = "cognito", identity_pool_id = "us-east-1:y" }}
"#,
        dir.display()
    );
    config::load_str(&text, std::path::Path::new("c.toml"), &Env::new()).unwrap()
}

fn write_daemon_file(dir: &std::path::Path, listen: &str, imds: &[(&str, &str)]) {
    let info = DaemonInfo {
        pid: 1,
        listen: listen.parse().unwrap(),
        imds_listeners: imds
            .iter()
            .map(|(n, a)| (n.to_string(), a.parse().unwrap()))
            .collect(),
        version: "v".into(),
    };
    std::fs::write(dir.join(DAEMON_FILE), serde_json::to_vec(&info).unwrap()).unwrap();
}

#[test]
fn env_prints_the_live_address_and_token_file() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let out = env_lines(&c, None, false, TokenMode::File).unwrap();
    assert!(
        out.contains(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:7777/v1/credentials/default\n"
        ),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE='{}/my tokens/ecs-token'",
            dir.path().display()
        )),
        "{out}"
    );
    // The running daemon's address wins over server.listen.
    let run = dir.path().join("run");
    crate::fsutil::ensure_private_dir(&run).unwrap();
    write_daemon_file(&run, "127.0.0.1:4242", &[]);
    let out = env_lines(&c, Some("dev"), false, TokenMode::File).unwrap();
    assert!(
        out.contains("http://127.0.0.1:4242/v1/credentials/dev\n"),
        "{out}"
    );
    assert_eq!(
        env_lines(&c, None, true, TokenMode::File).unwrap(),
        "export AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:4242/\n"
    );
    assert_eq!(
        env_lines(&c, Some("nope"), false, TokenMode::File)
            .unwrap_err()
            .exit_code(),
        crate::EXIT_USAGE
    );
}

#[test]
fn env_imds_names_the_profiles_own_listener() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    // Configured address until the daemon says what it bound.
    assert_eq!(
        env_lines(&c, Some("dev"), true, TokenMode::File).unwrap(),
        "export AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:7778/\n"
    );
    let run = dir.path().join("run");
    crate::fsutil::ensure_private_dir(&run).unwrap();
    write_daemon_file(&run, "127.0.0.1:4242", &[("dev", "127.0.0.1:5353")]);
    assert_eq!(
        env_lines(&c, Some("dev"), true, TokenMode::File).unwrap(),
        "export AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:5353/\n"
    );
    // The main listener serves server.imds_profile only.
    assert_eq!(
        env_lines(&c, Some("default"), true, TokenMode::File).unwrap(),
        "export AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:4242/\n"
    );
    // A per-profile listener in daemon.json must be loopback too.
    write_daemon_file(&run, "127.0.0.1:4242", &[("dev", "192.0.2.1:80")]);
    let e = env_lines(&c, Some("dev"), true, TokenMode::File).unwrap_err();
    assert!(e.to_string().contains("192.0.2.1:80"), "{e}");
}

#[test]
fn daemon_file_must_be_loopback_in_a_private_directory() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let run = dir.path().join("run");
    crate::fsutil::ensure_private_dir(&run).unwrap();
    write_daemon_file(&run, "[::1]:4242", &[]);
    assert_eq!(daemon_addr(&c).unwrap(), "[::1]:4242".parse().unwrap());
    write_daemon_file(&run, "192.0.2.7:9911", &[]);
    let e = daemon_addr(&c).unwrap_err();
    assert!(
        e.to_string().contains("192.0.2.7:9911") && e.to_string().contains("not a loopback"),
        "{e}"
    );
    assert_eq!(e.exit_code(), crate::EXIT_USAGE);
    // A runtime directory others may write to is not trusted.
    write_daemon_file(&run, "127.0.0.1:4242", &[]);
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = daemon_addr(&c).unwrap_err();
    assert!(e.to_string().contains("server.runtime_dir"), "{e}");
    assert!(env_lines(&c, None, false, TokenMode::File).is_err());
    assert!(DaemonClient::connect(&c).is_err());
}

#[test]
fn inline_token_reads_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    assert_eq!(
        env_lines(&c, None, false, TokenMode::Inline)
            .unwrap_err()
            .exit_code(),
        crate::EXIT_UNAVAILABLE
    );
    crate::fsutil::write_atomic_private(&c.server.ecs_token_file, b"tok-123").unwrap();
    let out = env_lines(&c, None, false, TokenMode::Inline).unwrap();
    assert!(
        out.ends_with("export AWS_CONTAINER_AUTHORIZATION_TOKEN=tok-123\n"),
        "{out}"
    );
}

#[tokio::test]
async fn a_daemon_that_is_not_running_is_exit_69() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    // A port nothing listens on: bind one, then let it go.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    c.server.listen = l.local_addr().unwrap();
    drop(l);
    crate::fsutil::write_atomic_private(&c.server.ecs_token_file, b"tok-1234567890abcdef").unwrap();
    let client = DaemonClient::connect(&c).unwrap();
    let e = client.status().await.unwrap_err();
    assert_eq!(e.exit_code(), crate::EXIT_UNAVAILABLE, "{e}");
    assert!(e.to_string().contains("credbroker serve"), "{e}");
    let e = client.credentials("default").await.unwrap_err();
    assert_eq!(e.exit_code(), crate::EXIT_UNAVAILABLE, "{e}");
    assert!(!e.to_string().contains('\n'));
}

fn env_of(pairs: &[(&str, &str)]) -> Env {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What the child sees: `env` with `plan` applied.
fn child_env(env: &Env, p: &exec::Plan) -> Env {
    let mut out = env.clone();
    for k in &p.remove {
        out.remove(*k);
    }
    out.extend(p.set.iter().cloned());
    out
}

#[test]
fn exec_child_sees_exactly_the_intended_aws_variables() {
    let mut polluted: Vec<(&str, &str)> = exec::REMOVED.iter().map(|(k, _)| (*k, "x")).collect();
    polluted.extend([
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "http://169.254.170.2/creds",
        ),
        ("AWS_CONFIG_FILE", "/tmp/c"),
        ("PATH", "/bin"),
    ]);
    let env = env_of(&polluted);
    let url = "http://127.0.0.1:1/v1/credentials/dev";
    let p = plan(
        &env,
        url,
        ChildToken::File("/run/tok".as_ref()),
        "eu-west-1",
    );
    let child = child_env(&env, &p);
    let aws: std::collections::BTreeMap<_, _> = child
        .iter()
        .filter(|(k, _)| k.starts_with("AWS_") || k.starts_with("BOTO"))
        .collect();
    let want: std::collections::BTreeMap<String, String> = [
        ("AWS_CONFIG_FILE", "/tmp/c"),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "/run/tok"),
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", url),
        ("AWS_DEFAULT_REGION", "eu-west-1"),
        ("AWS_REGION", "eu-west-1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(aws, want.iter().collect());
    assert_eq!(child["PATH"], "/bin");
    // Inline token: the other variable.
    let p = plan(&env, url, ChildToken::Inline("sekrit"), "eu-west-1");
    let child = child_env(&env, &p);
    assert_eq!(child["AWS_CONTAINER_AUTHORIZATION_TOKEN"], "sekrit");
    assert!(!child.contains_key("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"));
}

#[test]
fn exec_keeps_a_region_the_user_chose_for_every_sdk() {
    let url = "http://127.0.0.1:1/v1/credentials/dev";
    let t = ChildToken::File("/t".as_ref());
    let env = env_of(&[("AWS_REGION", "ap-south-1")]);
    let c = child_env(&env, &plan(&env, url, t, "eu-west-1"));
    assert_eq!(
        (c["AWS_REGION"].as_str(), c["AWS_DEFAULT_REGION"].as_str()),
        ("ap-south-1", "ap-south-1")
    );
    let env = env_of(&[("AWS_DEFAULT_REGION", "us-west-2"), ("AWS_REGION", "")]);
    let c = child_env(&env, &plan(&env, url, t, "eu-west-1"));
    assert_eq!(
        (c["AWS_REGION"].as_str(), c["AWS_DEFAULT_REGION"].as_str()),
        ("us-west-2", "us-west-2")
    );
    // A proxy must not see loopback requests.
    let env = env_of(&[
        ("HTTPS_PROXY", "http://proxy:3128"),
        ("NO_PROXY", "corp.example, localhost"),
    ]);
    let c = child_env(&env, &plan(&env, url, t, "eu-west-1"));
    assert_eq!(c["NO_PROXY"], "corp.example,localhost,127.0.0.1,::1");
    assert_eq!(c["no_proxy"], "127.0.0.1,localhost,::1");
    let env = env_of(&[]);
    assert!(!child_env(&env, &plan(&env, url, t, "eu-west-1")).contains_key("NO_PROXY"));
}

#[test]
fn exec_finds_credentials_in_the_default_profile() {
    let text = "[profile dev]\ncredential_process = x\n[default]\nregion = us-east-1\n\
                AWS_ACCESS_KEY_ID = AKIA\n[ profile  default ]\nrole_arn=arn\n";
    assert_eq!(
        default_credential_keys(text),
        ["aws_access_key_id", "role_arn"]
    );
    assert!(default_credential_keys("[default]\nregion = x\n").is_empty());
}

#[test]
fn exit_codes_follow_the_shell_convention() {
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        exec::exit_code(std::process::ExitStatus::from_raw(3 << 8)),
        3
    );
    assert_eq!(exec::exit_code(std::process::ExitStatus::from_raw(15)), 143);
}

#[test]
fn ecs_credentials_parse_and_redact() {
    let body = r#"{"AccessKeyId":"ASIAEXAMPLE1234","SecretAccessKey":"s3cr3t","Token":"t0k","Expiration":"2030-01-01T00:00:00Z","AccountId":"123456789012"}"#;
    let c = EcsCredentials::parse(body).unwrap();
    assert_eq!(c.account_id.as_deref(), Some("123456789012"));
    let dbg = format!("{c:?}");
    assert!(
        dbg.contains("1234") && !dbg.contains("s3cr3t") && !dbg.contains("t0k"),
        "{dbg}"
    );
    assert!(
        EcsCredentials::parse(
            r#"{"AccessKeyId":"A","SecretAccessKey":"","Token":"t","Expiration":"x"}"#
        )
        .is_none()
    );
}

fn answer(status: u16, ctype: &str, headers: &[(&'static str, &str)], body: &str) -> Answer {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("content-type", ctype.parse().unwrap());
    for (k, v) in headers {
        h.insert(*k, v.parse().unwrap());
    }
    Answer {
        status,
        headers: h,
        body: body.into(),
    }
}

#[test]
fn doctor_names_what_breaks_sdks() {
    use doctor_checks::*;
    let ttl = [("x-aws-ec2-metadata-token-ttl-seconds", "21600")];
    assert!(token_problems(&answer(200, "text/plain", &ttl, "tok")).is_empty());
    let p = token_problems(&answer(200, "text/plain", &[], "tok"));
    assert!(p[0].contains("lacks") && p[0].contains("Rust"), "{p:?}");
    assert!(
        role_list_problems(&answer(200, "text/plain", &[], "credbroker"), "credbroker").is_empty()
    );
    let p = role_list_problems(
        &answer(200, "text/plain", &[], "credbroker\n"),
        "credbroker",
    );
    assert!(p[0].contains("newline"), "{p:?}");
    let now = std::time::SystemTime::now();
    let doc = |code: &str, exp: &str| {
        format!(
            r#"{{{code}"AccessKeyId":"ASIAX1234","SecretAccessKey":"s","Token":"t","Expiration":"{exp}"}}"#
        )
    };
    let good = doc(r#""Code":"Success","#, "2099-01-01T00:00:00Z");
    let (ok, p) = creds_problems(
        &answer(200, "text/plain", &[], &good),
        Kind::Imds,
        Some(true),
        now,
    );
    assert!(
        p.is_empty() && ok.contains("…1234") && !ok.contains("\"s\""),
        "{ok} {p:?}"
    );
    let (_, p) = creds_problems(
        &answer(200, "text/plain", &[], &doc("", "2099-01-01T00:00:00Z")),
        Kind::Imds,
        None,
        now,
    );
    assert!(p.iter().any(|x| x.contains("Code")), "{p:?}");
    let (_, p) = creds_problems(
        &answer(
            200,
            "application/json",
            &[],
            &doc("", "2099-01-01T00:00:00+00:00"),
        ),
        Kind::Ecs,
        None,
        now,
    );
    assert!(p.len() == 1 && p[0].contains("does not end in Z"), "{p:?}");
    let (_, p) = creds_problems(
        &answer(
            200,
            "application/json",
            &[],
            &doc("", "2001-01-01T00:00:00Z"),
        ),
        Kind::Ecs,
        None,
        now,
    );
    assert!(p[0].contains("past"), "{p:?}");
    // A profile without credentials must answer 503.
    let (_, p) = creds_problems(
        &answer(
            503,
            "application/json",
            &[],
            r#"{"code":"x","message":"y"}"#,
        ),
        Kind::Ecs,
        Some(false),
        now,
    );
    assert!(p.is_empty(), "{p:?}");
    let (_, p) = creds_problems(
        &answer(200, "application/json", &[], &good),
        Kind::Ecs,
        Some(false),
        now,
    );
    assert!(!p.is_empty());
}

#[test]
fn doctor_checks_the_discovery_document() {
    use doctor_checks::discovery_problems;
    let doc = serde_json::json!({"issuer": "https://idp.example.com", "token_endpoint": "https://idp.example.com/token"});
    assert!(discovery_problems("https://idp.example.com", 200, Some(&doc)).is_empty());
    assert_eq!(
        discovery_problems("https://other.example.com", 200, Some(&doc)).len(),
        1
    );
    assert_eq!(
        discovery_problems("https://idp.example.com", 404, None),
        ["HTTP 404"]
    );
    let doc = serde_json::json!({"issuer": "https://idp.example.com", "token_endpoint": "http://idp.example.com/token"});
    assert!(
        discovery_problems("https://idp.example.com", 200, Some(&doc))[0].contains("plain http")
    );
}

#[test]
fn completions_and_man_come_from_the_definitions() {
    for shell in [
        CompletionShell::Bash,
        CompletionShell::Zsh,
        CompletionShell::Fish,
    ] {
        let s = String::from_utf8(generate::completions(shell)).unwrap();
        assert!(s.contains("credential-process"), "{shell:?}");
    }
    let man = String::from_utf8(generate::man(None).unwrap()).unwrap();
    assert!(
        man.starts_with(".ie") || man.contains(".TH credbroker"),
        "{}",
        &man[..200]
    );
    let exec = String::from_utf8(generate::man(Some("exec")).unwrap()).unwrap();
    assert!(
        exec.contains("credbroker\\-exec") && exec.contains("inline"),
        "{exec}"
    );
    assert_eq!(
        generate::man(Some("nope")).unwrap_err().exit_code(),
        crate::EXIT_USAGE
    );
}

#[test]
fn the_command_line_parses() {
    use clap::Parser;
    let cli = Cli::try_parse_from([
        "credbroker",
        "exec",
        "--profile",
        "dev",
        "--",
        "env",
        "-i",
        "--x",
    ])
    .unwrap();
    match cli.command {
        Command::Exec {
            profile,
            command,
            inline_token,
        } => {
            assert_eq!(profile.as_deref(), Some("dev"));
            assert!(!inline_token);
            assert_eq!(command, ["env", "-i", "--x"]);
        }
        other => panic!("{other:?}"),
    }
    assert!(Cli::try_parse_from(["credbroker", "exec"]).is_err());
    <Cli as clap::CommandFactory>::command().debug_assert();
}

#[test]
fn healthcheck_url_must_be_a_bare_http_address() {
    use super::healthcheck::target_from_url;
    let t = target_from_url("http://127.0.0.1:9911/").unwrap();
    assert_eq!(t.base, "http://127.0.0.1:9911");
    for bad in [
        "https://127.0.0.1:9911",
        "127.0.0.1:9911",
        "http://127.0.0.1:9911/healthz",
        "http://127.0.0.1:9911/?x=1",
        "not a url",
    ] {
        let e = target_from_url(bad).unwrap_err();
        assert_eq!(e.exit_code(), crate::EXIT_USAGE, "{bad}: {e}");
        assert!(e.to_string().contains("http://HOST:PORT"), "{bad}: {e}");
    }
}

/// `healthcheck` against the real router on a real socket: alive and ready,
/// alive but not ready (exit 3), and nothing listening (exit 69).
#[tokio::test]
async fn healthcheck_tells_alive_ready_and_gone_apart() {
    use super::healthcheck::{Probe, probe, target_from_url};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let clock: crate::clock::SharedClock = Arc::new(crate::clock::SystemClock);
    let (state, store) = crate::testing::server_state(addr, clock, "us-east-1", false, &[]);
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn({
        let stop = stop.clone();
        crate::server::serve(
            listener,
            crate::server::router(state),
            crate::server::Limits::default(),
            async move { stop.cancelled().await },
        )
    });
    let target = target_from_url(&format!("http://{addr}")).unwrap();
    let live = probe(&target, Probe::Live).await.unwrap();
    assert!(
        live.starts_with("healthy:") && live.contains(&addr.to_string()),
        "{live}"
    );
    let ready = probe(&target, Probe::Ready).await.unwrap();
    assert!(ready.starts_with("ready:"), "{ready}");

    store.update(|s| s.served = None);
    assert!(
        probe(&target, Probe::Live).await.is_ok(),
        "alive without credentials"
    );
    let e = probe(&target, Probe::Ready).await.unwrap_err();
    assert_eq!(e.exit_code(), crate::EXIT_NOT_SERVING, "{e}");
    assert!(e.to_string().starts_with("not ready:"), "{e}");

    stop.cancel();
    server.await.unwrap().unwrap();
    let e = probe(&target, Probe::Live).await.unwrap_err();
    assert_eq!(e.exit_code(), crate::EXIT_UNAVAILABLE, "{e}");
    assert!(
        e.to_string()
            .contains(&format!("no credbroker daemon answers at {addr}")),
        "{e}"
    );
    assert!(!e.to_string().contains('\n'), "{e}");
}

/// Without `--url`, the address comes from `daemon.json`, else `server.listen`.
#[test]
fn healthcheck_finds_the_daemon_like_every_client_command() {
    use super::healthcheck::target_from_config;
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let t = target_from_config(&c).unwrap();
    assert_eq!(t.base, "http://127.0.0.1:7777");
    assert!(t.source.contains("server.listen"), "{t:?}");
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    write_daemon_file(&run, "127.0.0.1:4321", &[]);
    let t = target_from_config(&c).unwrap();
    assert_eq!(t.base, "http://127.0.0.1:4321");
    assert!(t.source.ends_with("daemon.json"), "{t:?}");
}
