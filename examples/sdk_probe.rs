//! Test client: fetches credentials from credbroker with the **real** AWS SDK
//! for Rust providers, then proves them with STS `GetCallerIdentity`.
//!
//! ```text
//! sdk_probe imds|ecs|chain        # env: AWS_EC2_METADATA_SERVICE_ENDPOINT or
//!                                 #      AWS_CONTAINER_CREDENTIALS_FULL_URI (+ _TOKEN[_FILE]),
//!                                 #      STS_ENDPOINT (where GetCallerIdentity goes)
//! ```
//! Prints one JSON line `{"provider","access_key_id","expiration","arn"}`;
//! exits non-zero on any failure. Used by `tests/e2e`.

use std::process::ExitCode;
use std::time::SystemTime;

use aws_config::BehaviorVersion;
use aws_config::ecs::EcsCredentialsProvider;
use aws_config::imds::credentials::ImdsCredentialsProvider;
use aws_credential_types::provider::ProvideCredentials;

async fn probe(mode: &str) -> Result<String, Box<dyn std::error::Error>> {
    let creds = match mode {
        "imds" => {
            ImdsCredentialsProvider::builder()
                .build()
                .provide_credentials()
                .await?
        }
        "ecs" => {
            EcsCredentialsProvider::builder()
                .build()
                .provide_credentials()
                .await?
        }
        "chain" => {
            aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                .build()
                .await
                .provide_credentials()
                .await?
        }
        other => return Err(format!("unknown mode {other:?}").into()),
    };
    let expiration = creds
        .expiry()
        .map(|t| {
            aws_smithy_types::DateTime::from(t).fmt(aws_smithy_types::date_time::Format::DateTime)
        })
        .transpose()?;
    if creds.expiry().is_some_and(|t| t <= SystemTime::now()) {
        return Err("credentials already expired".into());
    }
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(creds.clone());
    if let Ok(ep) = std::env::var("STS_ENDPOINT") {
        loader = loader.endpoint_url(ep);
    }
    let sts = aws_sdk_sts::Client::new(&loader.load().await);
    let who = sts.get_caller_identity().send().await?;
    Ok(serde_json::json!({
        "provider": mode,
        "access_key_id": creds.access_key_id(),
        "expiration": expiration,
        "arn": who.arn(),
    })
    .to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "chain".into());
    match probe(&mode).await {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sdk_probe {mode}: {e:?}");
            ExitCode::from(1)
        }
    }
}
