//! Fresh-process time to first credential for `bench/` (issue 13), Rust
//! side: one credential fetch with the AWS SDK for Rust, then exit. The
//! parent (bench/bench.py) times the whole process, start-up included.
//!
//! ```text
//! bench_first_cred ecs       aws-config's ECS provider (AWS_CONTAINER_CREDENTIALS_FULL_URI …)
//! bench_first_cred imds      aws-config's IMDS provider (AWS_EC2_METADATA_SERVICE_ENDPOINT)
//! bench_first_cred cognito   the in-process route: GetId + GetCredentialsForIdentity
//!                            against COGNITO_ENDPOINT with Logins {LOGIN_PROVIDER: ID_TOKEN},
//!                            IDENTITY_POOL_ID (the id_token is given: no IdP call)
//! ```
//! Prints `{"access_key_id", "in_process_ms"}`; exits non-zero on failure.

use std::time::Instant;

use aws_config::BehaviorVersion;
use aws_config::ecs::EcsCredentialsProvider;
use aws_config::imds::credentials::ImdsCredentialsProvider;
use aws_credential_types::provider::ProvideCredentials;

type Error = Box<dyn std::error::Error>;

fn env(name: &str) -> Result<String, Error> {
    std::env::var(name).map_err(|_| format!("{name} is not set").into())
}

async fn cognito() -> Result<String, Error> {
    let conf = aws_config::defaults(BehaviorVersion::latest())
        .no_credentials()
        .endpoint_url(env("COGNITO_ENDPOINT")?)
        .load()
        .await;
    let client = aws_sdk_cognitoidentity::Client::new(&conf);
    let logins = (env("LOGIN_PROVIDER")?, env("ID_TOKEN")?);
    let id = client
        .get_id()
        .identity_pool_id(env("IDENTITY_POOL_ID")?)
        .logins(logins.0.clone(), logins.1.clone())
        .send()
        .await?;
    let out = client
        .get_credentials_for_identity()
        .set_identity_id(id.identity_id)
        .logins(logins.0, logins.1)
        .send()
        .await?;
    out.credentials
        .and_then(|c| c.access_key_id)
        .ok_or_else(|| "no credentials in the answer".into())
}

async fn fetch(mode: &str) -> Result<String, Error> {
    Ok(match mode {
        "ecs" => EcsCredentialsProvider::builder()
            .build()
            .provide_credentials()
            .await?
            .access_key_id()
            .to_owned(),
        "imds" => ImdsCredentialsProvider::builder()
            .build()
            .provide_credentials()
            .await?
            .access_key_id()
            .to_owned(),
        "cognito" => cognito().await?,
        other => return Err(format!("unknown mode {other:?}").into()),
    })
}

fn main() -> std::process::ExitCode {
    let t0 = Instant::now();
    let mode = std::env::args().nth(1).unwrap_or_default();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench_first_cred: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match rt.block_on(fetch(&mode)) {
        Ok(key) => {
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            println!(
                "{}",
                serde_json::json!({"access_key_id": key, "in_process_ms": ms})
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench_first_cred {mode}: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
