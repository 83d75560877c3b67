//! App tests: build-time checks, and the whole app (supervisor, reload)
//! against a fake upstream.

use super::*;
use crate::secret::ExposeSecret;

fn config(dir: &Path) -> Config {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
runtime_dir = "{0}/run"
[profiles.default]
state_dir = "{0}/state"
login = {{ kind = "none" }}
aws = {{ flow = "cognito", identity_pool_id = "us-east-1:x" }}
"#,
        dir.display()
    );
    crate::config::load_str(&text, Path::new("c.toml"), &Default::default()).unwrap()
}

/// Everything that must precede the refreshers happens in `build`, which
/// spawns nothing: the leftovers of a killed identity-id write are gone
/// before any refresher could write a new one.
#[tokio::test]
async fn build_checks_directories_and_cleans_up_before_anything_runs() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let state = dir.path().join("state");
    fsutil::ensure_private_dir(&state).unwrap();
    let stale = state.join(".identity-id.tmp.1.abc");
    std::fs::write(&stale, "us-east-1:half").unwrap();
    // A runtime directory others may write to is refused, naming the key.
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777)).unwrap();
    let clock: SharedClock = Arc::new(crate::clock::SystemClock);
    let e = App::build(cfg.clone(), Deps::real(clock.clone()))
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), crate::EXIT_USAGE);
    assert!(
        e.to_string().contains("server.runtime_dir") && e.to_string().contains("chmod 700"),
        "{e}"
    );
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
    let app = App::build(cfg, Deps::real(clock)).await.unwrap();
    assert!(
        !stale.exists(),
        "stale temp file left for the refreshers to race"
    );
    assert!(run.join("ecs-token").exists());
    assert!(
        !run.join(DAEMON_FILE).exists(),
        "build must not announce a daemon yet"
    );
    assert!(app.addr().ip().is_loopback() && app.addr().port() != 0);
}

#[test]
fn ecs_token_is_created_strong_and_weak_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("run").join("ecs-token");
    let t = ecs_token(&p, false).unwrap();
    assert_eq!(t.expose_secret().len(), 43);
    assert_eq!(std::fs::read_to_string(&p).unwrap(), t.expose_secret());
    assert_eq!(
        ecs_token(&p, false).unwrap().expose_secret(),
        t.expose_secret()
    );
    std::fs::write(&p, "abcd").unwrap();
    let e = ecs_token(&p, false).unwrap_err();
    assert_eq!(e.exit_code(), crate::EXIT_USAGE);
    assert!(
        e.to_string().contains("4 characters") && !e.to_string().contains("abcd"),
        "{e}"
    );
}

#[test]
fn ecs_token_can_be_shared_with_the_group_only() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("ecs");
    crate::fsutil::ensure_private_dir(&run).unwrap();
    let p = run.join("ecs-token");
    let t = ecs_token(&p, true).unwrap();
    assert_eq!((mode(&run), mode(&p)), (0o750, 0o640));
    // An existing 0600 token is opened to the group on the next start, and
    // read back without being refused.
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        ecs_token(&p, true).unwrap().expose_secret(),
        t.expose_secret()
    );
    assert_eq!(mode(&p), 0o640);
    // Never writable by the group, and without the option nothing changes.
    let other = dir.path().join("own").join("ecs-token");
    crate::fsutil::ensure_private_dir(other.parent().unwrap()).unwrap();
    ecs_token(&other, false).unwrap();
    assert_eq!(
        (mode(other.parent().unwrap()), mode(&other)),
        (0o700, 0o600)
    );
}

// --- the whole app against a fake upstream --------------------------------

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::creds::AwsCredentials;
use crate::upstream::{CredentialSource, UpstreamError};

/// Fetches per profile name (what "no upstream call" is checked against).
type Counts = Arc<Mutex<HashMap<String, u32>>>;

struct FakeFactory {
    counts: Counts,
}

struct FakeSource {
    /// What the credentials say: profile, and role ARN (to tell identities apart).
    label: String,
    role: Option<String>,
    counts: Counts,
}

impl SourceFactory for FakeFactory {
    type Source = FakeSource;
    async fn build(&self, p: &ProfileConfig) -> Result<FakeSource, UpstreamError> {
        Ok(FakeSource {
            label: p.name.clone(),
            role: p.aws.role_arn().map(str::to_owned),
            counts: self.counts.clone(),
        })
    }
}

impl CredentialSource for FakeSource {
    async fn fetch(&self) -> Result<AwsCredentials, UpstreamError> {
        let n = {
            let mut c = self.counts.lock().unwrap();
            let n = c.entry(self.label.clone()).or_default();
            *n += 1;
            *n
        };
        Ok(AwsCredentials {
            guest: false,
            access_key_id: format!("ASIA{}{n:04}", self.label.to_uppercase()),
            secret_access_key: secret("fake-secret"),
            session_token: secret("fake-token"),
            expiration: SystemTime::now() + Duration::from_secs(3600),
            account_id: None,
            role_arn: self.role.clone(),
        })
    }
}

struct Running {
    dir: tempfile::TempDir,
    base: String,
    token: String,
    counts: Counts,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), StartupError>>,
    http: reqwest::Client,
}

fn profile_toml(name: &str, role: &str, extra: &str) -> String {
    format!(
        "[profiles.{name}]\nregion = \"us-east-1\"\n{extra}\nlogin = {{ kind = \"none\" }}\n\
         aws = {{ flow = \"cognito-basic\", identity_pool_id = \"us-east-1:x\", role_arn = \"arn:aws:iam::123456789012:role/{role}\" }}\n"
    )
}

impl Running {
    async fn start(profiles: &str) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let text = Self::text(dir.path(), profiles);
        std::fs::write(&path, &text).unwrap();
        let env = Env::from([("HOME".to_owned(), dir.path().display().to_string())]);
        let cfg = crate::config::load(&path, &env).unwrap();
        let counts = Counts::default();
        let deps = Deps {
            clock: Arc::new(crate::clock::SystemClock),
            sources: FakeFactory {
                counts: counts.clone(),
            },
            listener: None,
            env,
            metrics: Default::default(),
        };
        let app = App::build(cfg, deps).await.unwrap();
        let base = format!("http://{}", app.addr());
        let token = std::fs::read_to_string(dir.path().join("run/ecs-token")).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run(async move {
            let _ = rx.await;
        }));
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        Running {
            dir,
            base,
            token,
            counts,
            stop: Some(tx),
            task,
            http,
        }
    }

    fn text(dir: &Path, profiles: &str) -> String {
        Self::text_with(dir, "b", profiles)
    }

    fn text_with(dir: &Path, imds_profile: &str, profiles: &str) -> String {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nruntime_dir = \"{}/run\"\nimds_profile = \"{imds_profile}\"\n{profiles}",
            dir.display()
        )
    }

    fn write(&self, profiles: &str) {
        self.write_with("b", profiles);
    }

    fn write_with(&self, imds_profile: &str, profiles: &str) {
        let path = self.dir.path().join("config.toml");
        std::fs::write(
            path,
            Self::text_with(self.dir.path(), imds_profile, profiles),
        )
        .unwrap();
    }

    async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("authorization", &self.token)
            .send()
            .await
            .unwrap();
        let code = r.status().as_u16();
        (code, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Poll `path` until `f` holds (at most `secs`).
    async fn until(
        &self,
        path: &str,
        secs: u64,
        f: impl Fn(u16, &serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let (code, v) = self.get(path).await;
            if f(code, &v) {
                return v;
            }
            if tokio::time::Instant::now() >= deadline {
                let (_, st) = self.get("/v1/status").await;
                panic!("{path}: last answer {code} {v}; status {st}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn fetches(&self, name: &str) -> u32 {
        *self.counts.lock().unwrap().get(name).unwrap_or(&0)
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

fn key(v: &serde_json::Value) -> String {
    v["AccessKeyId"].as_str().unwrap_or("").to_owned()
}

/// Added, removed, changed and untouched profiles, all by editing the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_removes_and_restarts_profiles_and_leaves_the_rest_alone() {
    let a = profile_toml("a", "A", "");
    let b = profile_toml("b", "B", "");
    let app = Running::start(&format!("{a}{b}")).await;
    let ok = |code: u16, _: &serde_json::Value| code == 200;
    app.until("/v1/credentials/a", 5, ok).await;
    let b_key = key(&app.until("/v1/credentials/b", 5, ok).await);
    assert_eq!(app.fetches("b"), 1);

    // Add c, remove a.
    let c = profile_toml("c", "C", "");
    app.write(&format!("{b}{c}"));
    app.until("/v1/credentials/c", 2, ok).await;
    app.until("/v1/credentials/a", 2, |code, _| code == 404)
        .await;
    let (_, st) = app.get("/v1/status").await;
    assert!(
        st["profiles"].get("a").is_none() && st["profiles"].get("c").is_some(),
        "{st}"
    );
    // b: untouched (same key, no new upstream call).
    assert_eq!(key(&app.get("/v1/credentials/b").await.1), b_key);
    assert_eq!(app.fetches("b"), 1);

    // A role change: never the old role's credentials afterwards.
    let c_key = key(&app.get("/v1/credentials/c").await.1);
    let c2 = profile_toml("c", "C2", "");
    app.write(&format!("{b}{c2}"));
    let v = app
        .until("/v1/credentials/c", 2, |code, v| {
            code == 200 && key(v) != c_key
        })
        .await;
    assert_ne!(key(&v), c_key);
    // A settings-only change (refresh_before) restarts c, keeping b alone.
    let c3 = profile_toml("c", "C2", "refresh_before = \"20m\"");
    app.write(&format!("{b}{c3}"));
    let fetched = app.fetches("c");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while app.fetches("c") == fetched {
        assert!(
            tokio::time::Instant::now() < deadline,
            "c was not restarted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.until("/v1/credentials/c", 2, ok).await;
    assert_eq!(app.fetches("b"), 1);
    assert_eq!(key(&app.get("/v1/credentials/b").await.1), b_key);
    app.stop().await;
}

/// A broken edit keeps everything running and says why; fixing it applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_edit_keeps_the_running_config() {
    let b = profile_toml("b", "B", "");
    let app = Running::start(&b).await;
    let ok = |code: u16, _: &serde_json::Value| code == 200;
    let b_key = key(&app.until("/v1/credentials/b", 5, ok).await);
    app.write(&format!("{b}[profiles.b.aws]\nbogus = 1\n"));
    let st = app
        .until("/v1/status", 2, |_, v| !v["config_error"].is_null())
        .await;
    let err = st["config_error"].as_str().unwrap();
    assert!(err.contains("config.toml"), "{err}");
    assert_eq!(key(&app.get("/v1/credentials/b").await.1), b_key);
    let c = profile_toml("c", "C", "");
    app.write(&format!("{b}{c}"));
    app.until("/v1/credentials/c", 2, ok).await;
    let (_, st) = app.get("/v1/status").await;
    assert!(st["config_error"].is_null(), "{st}");
    assert_eq!(app.fetches("b"), 1);
    app.stop().await;
}

/// Live server settings: the IMDS profile switches without a restart, and a
/// per-profile IMDS port comes and goes with its profile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_settings_and_imds_ports_apply_live() {
    let b = profile_toml("b", "B", "");
    let app = Running::start(&b).await;
    let ok = |code: u16, _: &serde_json::Value| code == 200;
    app.until("/v1/credentials", 5, ok).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = profile_toml("c", "C", &format!("imds_listen = \"127.0.0.1:{port}\""));
    app.write_with("c", &format!("{b}{c}"));
    // The main listener's default profile is now c.
    let v = app
        .until("/v1/credentials", 3, |code, v| {
            code == 200 && key(v).contains("ASIAC")
        })
        .await;
    assert!(key(&v).starts_with("ASIAC"), "{v}");
    // c's own IMDS port serves c's role.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let imds = format!("http://127.0.0.1:{port}");
    let token = http
        .put(format!("{imds}/latest/api/token"))
        .header("x-aws-ec2-metadata-token-ttl-seconds", "60")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let roles = http
        .get(format!("{imds}/latest/meta-data/iam/security-credentials/"))
        .header("x-aws-ec2-metadata-token", &token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(roles, "credbroker");
    // Its port serves no ECS route.
    let r = http
        .get(format!("{imds}/v1/credentials/c"))
        .header("authorization", &app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let info: DaemonInfo = serde_json::from_str(
        &std::fs::read_to_string(app.dir.path().join("run").join(DAEMON_FILE)).unwrap(),
    )
    .unwrap();
    assert_eq!(info.imds_listeners["c"].port(), port);
    // Removing c closes its port.
    app.write(&b);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "c's IMDS port still open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}

/// `$CREDENTIALS_DIRECTORY/refresh-token.<profile>` seeds a missing token,
/// never an existing one (it may have rotated since the seed was issued).
#[test]
fn a_systemd_credential_seeds_only_a_missing_refresh_token() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[profiles.p]
region = "us-east-1"
state_dir = "{0}/state"
[profiles.p.login]
kind = "oidc"
issuer = "https://idp.example"
client_id = "c"
[profiles.p.aws]
flow = "sts"
role_arn = "arn:aws:iam::123456789012:role/R"
"#,
        dir.path().display()
    );
    let cfg = crate::config::load_str(&text, Path::new("c.toml"), &Default::default()).unwrap();
    let p = &cfg.profiles["p"];
    let creds = dir.path().join("creds");
    fsutil::ensure_private_dir(&creds).unwrap();
    fsutil::ensure_private_dir(&dir.path().join("state")).unwrap();
    assert!(
        !seed_refresh_token(p, &creds).unwrap(),
        "no seed: nothing to do"
    );
    fsutil::write_atomic_private(&creds.join(seed_name("p")), b"rt-seed\n").unwrap();
    assert!(seed_refresh_token(p, &creds).unwrap());
    let file = p.login.refresh_token_file().unwrap();
    assert_eq!(std::fs::read_to_string(file).unwrap(), "rt-seed");
    assert_eq!(
        std::fs::metadata(file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // A rotated token in the state directory wins over the (now dead) seed.
    fsutil::write_atomic_private(file, b"rt-rotated").unwrap();
    assert!(!seed_refresh_token(p, &creds).unwrap());
    assert_eq!(std::fs::read_to_string(file).unwrap(), "rt-rotated");
}
