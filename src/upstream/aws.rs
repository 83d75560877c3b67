//! AWS SDK plumbing shared by the Cognito, user-pool and STS layers: the
//! `SdkConfig` (explicit region, **no credentials** — every call we make is
//! unsigned, and the default chain could end up asking this very daemon) and
//! the mapping from SDK errors to [`UpstreamError`].
//!
//! Endpoints: `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_<SERVICE>` and the shared
//! config file are honoured by the SDK loader itself; a profile's
//! `endpoint_url` overrides them for every service of that profile.

use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sts::config::Region;
use aws_sdk_sts::config::http::HttpResponse;
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};

use super::{UpstreamError, short};
use crate::config::ProfileConfig;

/// Build the unsigned SDK configuration for a profile.
pub async fn sdk_config(profile: &ProfileConfig) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(profile.region.clone()))
        .no_credentials()
        // The refresher has its own backoff; keep each attempt short so a
        // black-holed endpoint cannot stall a refresh for minutes.
        .retry_config(RetryConfig::standard().with_max_attempts(2))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .read_timeout(Duration::from_secs(15))
                .operation_attempt_timeout(Duration::from_secs(20))
                .operation_timeout(Duration::from_secs(45))
                .build(),
        );
    if let Some(url) = &profile.endpoint_url {
        loader = loader.endpoint_url(url.as_str().trim_end_matches('/'));
    }
    loader.load().await
}

/// The endpoint override the SDK honours for one service (`suffix` as in
/// `AWS_ENDPOINT_URL_<SUFFIX>`), and where it came from: the profile's
/// `endpoint_url`, then the service's variable, then `AWS_ENDPOINT_URL`.
/// `None`: the regional endpoint.
pub fn endpoint_override(
    p: &ProfileConfig,
    env: &crate::config::Env,
    suffix: &str,
) -> Option<(String, String)> {
    let var = |k: &str| env.get(k).filter(|v| !v.trim().is_empty()).cloned();
    let service_var = format!("AWS_ENDPOINT_URL_{suffix}");
    if let Some(u) = &p.endpoint_url {
        Some((u.to_string(), format!("profiles.{}.endpoint_url", p.name)))
    } else if let Some(u) = var(&service_var) {
        Some((u, service_var))
    } else {
        var("AWS_ENDPOINT_URL").map(|u| (u, "AWS_ENDPOINT_URL".into()))
    }
}

/// Convert an SDK timestamp.
pub fn to_system_time(dt: &aws_smithy_types::DateTime) -> Option<SystemTime> {
    SystemTime::try_from(*dt).ok()
}

/// Classify an SDK error by the reaction it needs. Only error codes, HTTP
/// statuses and AWS's own (truncated) messages are kept: no request data.
pub fn classify<E>(service: &'static str, err: SdkError<E, HttpResponse>) -> UpstreamError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        SdkError::ConstructionFailure(_) => UpstreamError::Local {
            message: format!("{service}: could not build the request"),
        },
        SdkError::TimeoutError(_) => UpstreamError::Transport {
            service,
            message: "timed out".into(),
        },
        SdkError::DispatchFailure(d) => UpstreamError::Transport {
            service,
            message: if d.is_timeout() {
                "timed out".into()
            } else if d.is_io() {
                "connection failed".into()
            } else {
                "request could not be sent".into()
            },
        },
        SdkError::ResponseError(_) => UpstreamError::BadResponse {
            service,
            message: "unparsable response".into(),
        },
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("Unknown").to_owned();
            let message = short(se.err().message().unwrap_or(""));
            classify_code(service, code, message, Some(se.raw().status().as_u16()))
        }
        _ => UpstreamError::Transport {
            service,
            message: "request failed".into(),
        },
    }
}

/// Cognito Identity error codes that mean a server-side fault (besides the
/// SDK's own lists below and any 5xx status).
const COGNITO_TRANSIENT: [&str; 3] = [
    "InternalErrorException",
    "IDPCommunicationError",
    "ExternalServiceException",
];

/// Map an AWS error code (and the response status, when known) to the
/// reaction it needs. Throttling and transient codes come from the SDK's own
/// retry classifier lists (`aws_runtime::retries::classifiers`), so they stay
/// in step with the SDK.
fn classify_code(
    service: &'static str,
    code: String,
    message: String,
    status: Option<u16>,
) -> UpstreamError {
    use aws_runtime::retries::classifiers::{THROTTLING_ERRORS, TRANSIENT_ERRORS};
    let code_str = code.as_str();
    if THROTTLING_ERRORS.contains(&code_str) || status == Some(429) {
        return UpstreamError::Throttled { service, code };
    }
    if code_str == "ResourceNotFoundException" {
        return UpstreamError::NotFound {
            service,
            code,
            message,
        };
    }
    if TRANSIENT_ERRORS.contains(&code_str)
        || COGNITO_TRANSIENT.contains(&code_str)
        || status.is_some_and(|s| s >= 500)
        || matches!(code_str, "Unknown" | "Unhandled")
    {
        return UpstreamError::Transport {
            service,
            message: format!("{code}: {message}"),
        };
    }
    UpstreamError::Rejected {
        service,
        code,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_reactions() {
        let c = |code: &str| classify_code("x", code.into(), String::new(), Some(400));
        assert!(matches!(
            c("TooManyRequestsException"),
            UpstreamError::Throttled { .. }
        ));
        assert!(matches!(
            c("ResourceNotFoundException"),
            UpstreamError::NotFound { .. }
        ));
        assert!(matches!(
            c("InternalErrorException"),
            UpstreamError::Transport { .. }
        ));
        assert!(c("NotAuthorizedException").is_token_rejected());
        assert!(matches!(c("AccessDenied"), UpstreamError::Rejected { .. }));
        // From the SDK's list, missing from the old hand-kept one.
        assert!(matches!(
            c("RequestThrottledException"),
            UpstreamError::Throttled { .. }
        ));
        assert!(matches!(
            c("RequestTimeout"),
            UpstreamError::Transport { .. }
        ));
        // The status decides for codes no list knows.
        let s = |code: &str, st| classify_code("x", code.into(), String::new(), Some(st));
        assert!(matches!(s("Weird", 503), UpstreamError::Transport { .. }));
        assert!(matches!(s("Weird", 429), UpstreamError::Throttled { .. }));
        assert!(matches!(s("Weird", 400), UpstreamError::Rejected { .. }));
    }
}
