//! Test client: fetches credentials from credbroker with the **real** AWS SDK
//! for Rust providers, then proves them with STS `GetCallerIdentity`.
//!
//! ```text
//! sdk_probe imds|ecs|chain            one fetch; prints {"provider","access_key_id","expiration","arn"}
//! sdk_probe region                    the default region chain (IMDS when AWS_REGION is unset)
//! sdk_probe rotate FILE WRONG         one ECS provider, three fetches: FILE as is, FILE
//!                                     rewritten with WRONG (must fail: the SDK re-reads it),
//!                                     FILE restored
//! sdk_probe loop imds|ecs|chain SECS  GetCallerIdentity once a second through the SDK's own
//!                                     identity cache; records the key each request was signed with
//! ```
//! Environment: `AWS_EC2_METADATA_SERVICE_ENDPOINT` or `AWS_CONTAINER_CREDENTIALS_FULL_URI`
//! (+ `AWS_CONTAINER_AUTHORIZATION_TOKEN[_FILE]`), and `STS_ENDPOINT` (where
//! `GetCallerIdentity` goes). Prints one JSON line; exits non-zero on failure.
//! Used by `tests/e2e`.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aws_config::BehaviorVersion;
use aws_config::ecs::EcsCredentialsProvider;
use aws_config::imds::credentials::ImdsCredentialsProvider;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use serde_json::json;

type Error = Box<dyn std::error::Error>;

async fn provider(mode: &str) -> Result<SharedCredentialsProvider, Error> {
    Ok(match mode {
        "imds" => SharedCredentialsProvider::new(ImdsCredentialsProvider::builder().build()),
        "ecs" => SharedCredentialsProvider::new(EcsCredentialsProvider::builder().build()),
        "chain" => SharedCredentialsProvider::new(
            aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                .build()
                .await,
        ),
        other => return Err(format!("unknown mode {other:?}").into()),
    })
}

/// Records the access key id each request was signed with.
#[derive(Debug, Clone, Default)]
struct KeyRecorder(Arc<Mutex<Option<String>>>);

impl Intercept for KeyRecorder {
    fn name(&self) -> &'static str {
        "KeyRecorder"
    }
    fn read_before_transmit(
        &self,
        ctx: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let key = ctx
            .request()
            .headers()
            .get("authorization")
            .and_then(|a| a.split("Credential=").nth(1))
            .and_then(|c| c.split('/').next())
            .map(str::to_owned);
        if let Ok(mut k) = self.0.lock() {
            *k = key;
        }
        Ok(())
    }
}

async fn sts_client(
    creds: SharedCredentialsProvider,
    recorder: Option<KeyRecorder>,
) -> aws_sdk_sts::Client {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(creds);
    if let Ok(ep) = std::env::var("STS_ENDPOINT") {
        loader = loader.endpoint_url(ep);
    }
    let sdk = loader.load().await;
    let mut conf = aws_sdk_sts::config::Builder::from(&sdk);
    if let Some(r) = recorder {
        conf = conf.interceptor(r);
    }
    aws_sdk_sts::Client::from_conf(conf.build())
}

fn fmt_time(t: SystemTime) -> Result<String, Error> {
    Ok(aws_smithy_types::DateTime::from(t).fmt(aws_smithy_types::date_time::Format::DateTime)?)
}

async fn once(mode: &str) -> Result<serde_json::Value, Error> {
    let p = provider(mode).await?;
    let creds = p.provide_credentials().await?;
    let expiration = creds.expiry().map(fmt_time).transpose()?;
    if creds.expiry().is_some_and(|t| t <= SystemTime::now()) {
        return Err("credentials already expired".into());
    }
    let static_creds = SharedCredentialsProvider::new(creds.clone());
    let who = sts_client(static_creds, None)
        .await
        .get_caller_identity()
        .send()
        .await?;
    Ok(json!({
        "provider": mode,
        "access_key_id": creds.access_key_id(),
        "expiration": expiration,
        "arn": who.arn(),
    }))
}

async fn region() -> Result<serde_json::Value, Error> {
    let sdk = aws_config::load_defaults(BehaviorVersion::latest()).await;
    Ok(json!({"mode": "region", "region": sdk.region().map(|r| r.to_string())}))
}

async fn rotate(file: &str, wrong: &str) -> Result<serde_json::Value, Error> {
    let p = EcsCredentialsProvider::builder().build();
    let original = std::fs::read(file)?;
    let mut fetches = Vec::new();
    let fetch = async |p: &EcsCredentialsProvider| match p.provide_credentials().await {
        Ok(c) => json!({"ok": true, "access_key_id": c.access_key_id()}),
        Err(e) => json!({"ok": false, "error": format!("{e:?}")}),
    };
    fetches.push(fetch(&p).await);
    std::fs::write(file, wrong)?;
    fetches.push(fetch(&p).await);
    std::fs::write(file, &original)?;
    fetches.push(fetch(&p).await);
    let ok = fetches[0]["ok"] == true && fetches[1]["ok"] == false && fetches[2]["ok"] == true;
    Ok(json!({"mode": "rotate", "ok": ok, "fetches": fetches}))
}

async fn run_loop(mode: &str, seconds: u64) -> Result<serde_json::Value, Error> {
    let recorder = KeyRecorder::default();
    let sts = sts_client(provider(mode).await?, Some(recorder.clone())).await;
    let start = Instant::now();
    let (mut calls, mut failures) = (0u64, 0u64);
    let mut keys: Vec<String> = Vec::new();
    let mut arns: Vec<String> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    while start.elapsed() < Duration::from_secs(seconds) {
        let tick = Instant::now();
        calls += 1;
        match sts.get_caller_identity().send().await {
            Ok(who) => {
                let arn = who.arn().unwrap_or_default().to_owned();
                if !arns.contains(&arn) {
                    arns.push(arn);
                }
                let key = recorder
                    .0
                    .lock()
                    .ok()
                    .and_then(|k| k.clone())
                    .unwrap_or_default();
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
            Err(e) => {
                failures += 1;
                if errors.len() < 5 {
                    errors.push(format!("{:.0}s: {e:?}", start.elapsed().as_secs_f64()));
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed())).await;
    }
    Ok(json!({
        "mode": "loop", "ok": failures == 0, "source": mode, "calls": calls, "failures": failures,
        "distinct_keys": keys.len(), "keys": keys, "arns": arns, "errors": errors,
    }))
}

async fn probe(args: &[String]) -> Result<serde_json::Value, Error> {
    let arg = |i: usize| {
        args.get(i)
            .map(String::as_str)
            .ok_or_else(|| Error::from("missing argument"))
    };
    match arg(0).unwrap_or("chain") {
        "region" => region().await,
        "rotate" => rotate(arg(1)?, arg(2)?).await,
        "loop" => run_loop(arg(1)?, arg(2)?.parse()?).await,
        mode => once(mode).await,
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match probe(&args).await {
        Ok(v) => {
            println!("{v}");
            if v.get("ok") == Some(&serde_json::Value::Bool(false)) {
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sdk_probe {}: {e:?}", args.join(" "));
            ExitCode::from(1)
        }
    }
}
