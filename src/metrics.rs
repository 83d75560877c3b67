//! Prometheus metrics (`GET /metrics`): one [`Metrics`] per daemon, created
//! by `app` (the composition root) and handed to the server, the refreshers
//! and the upstream clients as small typed handles.
//!
//! | family | type | labels | written by |
//! |---|---|---|---|
//! | `credbroker_refreshes_total` | counter | `profile`, `outcome` (`success`, `failure`, `login_required`) | refresher ([`RefreshCounters`]) |
//! | `credbroker_credentials_expiry_seconds` | gauge | `profile` | computed at scrape time from the profile's snapshot ([`ProfileSample`]) |
//! | `credbroker_login_required` | gauge 0/1 | `profile` | computed at scrape time |
//! | `credbroker_upstream_request_duration_seconds` | histogram | `call` ([`Call`]) | upstream clients ([`UpstreamTimer`]) |
//! | `credbroker_http_requests_total` | counter | `listener` (`main`, `imds`, `metrics`), `route` (a fixed route template, never the raw path), `status` | the server's outermost layer |
//! | `credbroker_imds_tokens_issued_total` | counter | – | IMDS token table ([`TokenMetrics`]) |
//! | `credbroker_imds_tokens_evicted_total` | counter | `reason` (`expired`, `capacity`) | IMDS token table |
//! | `credbroker_build_info` | info | `version`, `build` | fixed at start |
//!
//! No label or value is ever a secret or an access key id: labels are profile
//! names (from the config), fixed strings and status codes.
//!
//! Profiles removed by a config reload **disappear** from the output: the
//! per-profile gauges come from the live registry at each scrape, and the
//! supervisor drops a stopped profile's refresh counters
//! ([`Metrics::forget_profile`]); Prometheus marks the vanished series stale.
//! A profile that is added back starts counting from zero again (a counter
//! reset, which `rate()` handles).
//!
//! The encoder writes **OpenMetrics** text (it has an `info` type and ends
//! with `# EOF`), so it is served as [`CONTENT_TYPE`]; Prometheus rejects it
//! as `text/plain; version=0.0.4`.
//!
//! Cost on the serving path: a request is counted through a
//! [`RequestCounters`] slot resolved on first use, so after that one
//! `OnceLock` read and one atomic add (3 ns measured in a release build,
//! against about 120 ns for a label-set lookup in the family: its lock and
//! SipHash); nothing allocates.

use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use prometheus_client::encoding::{EncodeLabelSet, text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Prefix of every metric name.
const PREFIX: &str = "credbroker";

/// An upstream call whose latency is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Call {
    /// OAuth2 refresh grant at the IdP's token endpoint.
    IdpRefresh,
    /// OIDC discovery (`/.well-known/openid-configuration`).
    IdpDiscovery,
    /// Cognito user pool `InitiateAuth` (`REFRESH_TOKEN_AUTH`).
    UserPoolRefresh,
    /// Cognito Identity `GetId`.
    GetId,
    /// Cognito Identity `GetCredentialsForIdentity` (enhanced flow).
    GetCredentialsForIdentity,
    /// Cognito Identity `GetOpenIdToken` (basic flow).
    GetOpenIdToken,
    /// STS `AssumeRoleWithWebIdentity`.
    AssumeRoleWithWebIdentity,
}

impl Call {
    /// Every call, in label order.
    pub const ALL: [Call; 7] = [
        Call::IdpRefresh,
        Call::IdpDiscovery,
        Call::UserPoolRefresh,
        Call::GetId,
        Call::GetCredentialsForIdentity,
        Call::GetOpenIdToken,
        Call::AssumeRoleWithWebIdentity,
    ];

    /// The `call` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Call::IdpRefresh => "idp_refresh",
            Call::IdpDiscovery => "idp_discovery",
            Call::UserPoolRefresh => "user_pool_refresh",
            Call::GetId => "get_id",
            Call::GetCredentialsForIdentity => "get_credentials_for_identity",
            Call::GetOpenIdToken => "get_open_id_token",
            Call::AssumeRoleWithWebIdentity => "assume_role_with_web_identity",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefreshLabels {
    profile: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CallLabels {
    call: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    listener: &'static str,
    route: &'static str,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ProfileLabels {
    profile: String,
}

type HistogramFamily = Family<CallLabels, Histogram, fn() -> Histogram>;

/// 5 ms … 20 s: a local IdP answers in milliseconds, a slow AWS region or a
/// retrying SDK in seconds.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

/// The daemon's metrics: the registry and its typed families.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    refreshes: Family<RefreshLabels, Counter>,
    upstream: HistogramFamily,
    requests: Family<RequestLabels, Counter>,
    tokens_issued: Counter,
    tokens_evicted: Family<ReasonLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// What a scrape reports about one profile, read from its snapshot at that
/// moment (so a removed profile is simply not in the list).
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileSample {
    /// Profile name.
    pub profile: String,
    /// Seconds until the served credentials expire (negative once expired);
    /// `None` when none are held, and then the series is absent.
    pub expires_in: Option<f64>,
    /// The refresher waits for a new login.
    pub login_required: bool,
}

impl Metrics {
    /// A registry with every family registered (and no samples yet).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let refreshes = Family::<RefreshLabels, Counter>::default();
        registry.register(
            "refreshes",
            "Upstream refresh attempts by profile and outcome",
            refreshes.clone(),
        );
        let upstream: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "upstream_request_duration",
            "Latency of upstream calls (IdP and AWS) by call",
            prometheus_client::registry::Unit::Seconds,
            upstream.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests served, by listener, route template and status",
            requests.clone(),
        );
        let tokens_issued = Counter::default();
        registry.register(
            "imds_tokens_issued",
            "IMDSv2 session tokens issued",
            tokens_issued.clone(),
        );
        let tokens_evicted = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "imds_tokens_evicted",
            "IMDSv2 session tokens dropped from the table: expired (purged) or capacity (the table was full)",
            tokens_evicted.clone(),
        );
        let build = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        };
        registry.register(
            "build",
            "Build information",
            Info::new([("version", env!("CARGO_PKG_VERSION")), ("build", build)]),
        );
        // Zero-valued series from the start, so `rate()` and `increase()`
        // see the first event instead of a series appearing at 1.
        for call in Call::ALL {
            let _ = upstream.get_or_create(&CallLabels {
                call: call.as_str(),
            });
        }
        for reason in ["expired", "capacity"] {
            let _ = tokens_evicted.get_or_create(&ReasonLabels { reason });
        }
        Metrics {
            registry,
            refreshes,
            upstream,
            requests,
            tokens_issued,
            tokens_evicted,
        }
    }

    /// The refresh counters of `profile` (created at zero).
    pub fn refresh_counters(&self, profile: &str) -> RefreshCounters {
        let get = |outcome| {
            self.refreshes.get_or_create_owned(&RefreshLabels {
                profile: profile.to_owned(),
                outcome,
            })
        };
        RefreshCounters {
            success: get("success"),
            failure: get("failure"),
            login_required: get("login_required"),
        }
    }

    /// Stop reporting `profile` (it was removed from the config).
    pub fn forget_profile(&self, profile: &str) {
        for outcome in ["success", "failure", "login_required"] {
            self.refreshes.remove(&RefreshLabels {
                profile: profile.to_owned(),
                outcome,
            });
        }
    }

    /// The latency histograms of upstream calls.
    pub fn upstream_timer(&self) -> UpstreamTimer {
        UpstreamTimer {
            histograms: Call::ALL.map(|c| {
                self.upstream
                    .get_or_create_owned(&CallLabels { call: c.as_str() })
            }),
        }
    }

    /// The IMDS token table's counters.
    pub fn token_metrics(&self) -> TokenMetrics {
        TokenMetrics {
            issued: self.tokens_issued.clone(),
            expired: self
                .tokens_evicted
                .get_or_create_owned(&ReasonLabels { reason: "expired" }),
            capacity: self
                .tokens_evicted
                .get_or_create_owned(&ReasonLabels { reason: "capacity" }),
        }
    }

    /// Count one served request on `listener` (`main`, `imds` for a
    /// per-profile port, `metrics`). `route` must come from a fixed set (a
    /// route template), never from the request itself. (The serving path
    /// uses [`RequestCounters`], which skips the lookup.)
    pub fn count_request(&self, listener: &'static str, route: &'static str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                listener,
                route,
                status,
            })
            .inc();
    }

    /// Request counters for one listener whose routes are `routes`.
    pub fn request_counters(
        self: &std::sync::Arc<Self>,
        listener: &'static str,
        routes: &'static [&'static str],
    ) -> RequestCounters {
        RequestCounters {
            metrics: self.clone(),
            listener,
            routes,
            slots: (0..routes.len() * STATUSES.len())
                .map(|_| OnceLock::new())
                .collect(),
        }
    }

    /// The whole exposition: the registry, then the per-profile gauges of
    /// this scrape, then `# EOF`.
    pub fn render(&self, profiles: &[ProfileSample]) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail; the encoder's fmt::Result is
        // only ever Ok here.
        let _ = text::encode_registry(&mut out, &self.registry);
        let _ = text::encode_registry(&mut out, &profile_registry(profiles));
        let _ = text::encode_eof(&mut out);
        out
    }
}

/// A throwaway registry holding this scrape's per-profile gauges.
fn profile_registry(profiles: &[ProfileSample]) -> Registry {
    let mut reg = Registry::with_prefix(PREFIX);
    let expiry = Family::<ProfileLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let login = Family::<ProfileLabels, Gauge>::default();
    for p in profiles {
        let labels = ProfileLabels {
            profile: p.profile.clone(),
        };
        if let Some(secs) = p.expires_in {
            expiry.get_or_create(&labels).set(secs);
        }
        login
            .get_or_create(&labels)
            .set(i64::from(p.login_required));
    }
    reg.register_with_unit(
        "credentials_expiry",
        "Seconds until the served credentials of a profile expire (negative: expired; absent: none held)",
        prometheus_client::registry::Unit::Seconds,
        expiry,
    );
    reg.register(
        "login_required",
        "1 while a profile waits for a new login (the IdP refused its refresh token)",
        login,
    );
    reg
}

/// The statuses the server answers with; others still count, through the
/// family lookup.
const STATUSES: [u16; 12] = [200, 400, 401, 403, 404, 405, 408, 413, 431, 500, 503, 504];

/// One listener's request counters: a slot per (route, status) resolved on
/// first use, so the serving path does no label lookup.
#[derive(Debug)]
pub struct RequestCounters {
    metrics: std::sync::Arc<Metrics>,
    listener: &'static str,
    routes: &'static [&'static str],
    slots: Box<[OnceLock<Counter>]>,
}

impl RequestCounters {
    /// Count a request to `routes[route]` answered with `status`.
    pub fn inc(&self, route: usize, status: u16) {
        let name = self.routes.get(route).copied().unwrap_or("other");
        let slot = STATUSES
            .iter()
            .position(|s| *s == status)
            .and_then(|i| self.slots.get(route * STATUSES.len() + i));
        match slot {
            Some(slot) => {
                let counter = slot.get_or_init(|| {
                    self.metrics.requests.get_or_create_owned(&RequestLabels {
                        listener: self.listener,
                        route: name,
                        status,
                    })
                });
                counter.inc();
            }
            None => self.metrics.count_request(self.listener, name, status),
        }
    }
}

/// One profile's refresh counters (clones share the counts). `Default`
/// gives detached counters that no scrape shows (tests).
#[derive(Debug, Clone, Default)]
pub struct RefreshCounters {
    /// Attempts that produced credentials.
    pub success: Counter,
    /// Retryable failures.
    pub failure: Counter,
    /// Failures that need a new login.
    pub login_required: Counter,
}

/// Times upstream calls into the latency histogram. `Default` gives
/// detached histograms (tests, one-shot commands).
#[derive(Debug, Clone)]
pub struct UpstreamTimer {
    histograms: [Histogram; 7],
}

impl Default for UpstreamTimer {
    fn default() -> Self {
        UpstreamTimer {
            histograms: Call::ALL.map(|_| latency_histogram()),
        }
    }
}

impl UpstreamTimer {
    /// Record that `call` took `took`.
    pub fn observe(&self, call: Call, took: Duration) {
        let i = Call::ALL.iter().position(|c| *c == call).unwrap_or(0);
        self.histograms[i].observe(took.as_secs_f64());
    }

    /// Run `fut` and record how long it took (success or failure alike).
    pub async fn time<F: Future>(&self, call: Call, fut: F) -> F::Output {
        let start = Instant::now();
        let out = fut.await;
        self.observe(call, start.elapsed());
        out
    }
}

/// The IMDS token table's counters. `Default` gives detached ones.
#[derive(Debug, Clone, Default)]
pub struct TokenMetrics {
    /// Tokens issued.
    pub issued: Counter,
    /// Expired tokens purged.
    pub expired: Counter,
    /// Live tokens evicted because the table was full.
    pub capacity: Counter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_present_and_the_text_ends_with_eof() {
        let m = Metrics::new();
        let c = m.refresh_counters("dev");
        c.success.inc();
        c.login_required.inc();
        m.upstream_timer()
            .observe(Call::GetId, Duration::from_millis(30));
        m.count_request("main", "/v1/credentials/{profile}", 200);
        m.count_request("main", "/v1/credentials/{profile}", 200);
        let t = m.token_metrics();
        t.issued.inc();
        t.capacity.inc();
        let out = m.render(&[
            ProfileSample {
                profile: "dev".into(),
                expires_in: Some(1234.5),
                login_required: false,
            },
            ProfileSample {
                profile: "ops".into(),
                expires_in: None,
                login_required: true,
            },
        ]);
        for want in [
            "# TYPE credbroker_refreshes counter",
            "credbroker_refreshes_total{profile=\"dev\",outcome=\"success\"} 1",
            "credbroker_refreshes_total{profile=\"dev\",outcome=\"failure\"} 0",
            "credbroker_refreshes_total{profile=\"dev\",outcome=\"login_required\"} 1",
            "# TYPE credbroker_upstream_request_duration_seconds histogram",
            "credbroker_upstream_request_duration_seconds_count{call=\"get_id\"} 1",
            "credbroker_upstream_request_duration_seconds_count{call=\"assume_role_with_web_identity\"} 0",
            "credbroker_http_requests_total{listener=\"main\",route=\"/v1/credentials/{profile}\",status=\"200\"} 2",
            "credbroker_imds_tokens_issued_total 1",
            "credbroker_imds_tokens_evicted_total{reason=\"capacity\"} 1",
            "credbroker_imds_tokens_evicted_total{reason=\"expired\"} 0",
            "# TYPE credbroker_build info",
            "credbroker_build_info{version=\"",
            "# TYPE credbroker_credentials_expiry_seconds gauge",
            "# UNIT credbroker_credentials_expiry_seconds seconds",
            "credbroker_credentials_expiry_seconds{profile=\"dev\"} 1234.5",
            "credbroker_login_required{profile=\"dev\"} 0",
            "credbroker_login_required{profile=\"ops\"} 1",
        ] {
            assert!(out.contains(want), "missing {want:?} in\n{out}");
        }
        assert!(
            !out.contains("credbroker_credentials_expiry_seconds{profile=\"ops\"}"),
            "no expiry series without credentials:\n{out}"
        );
        assert!(out.ends_with("# EOF\n"), "{out}");
        assert_eq!(out.matches("# EOF").count(), 1, "{out}");
        assert!(CONTENT_TYPE.starts_with("application/openmetrics-text; version=1.0.0"));
    }

    #[test]
    fn request_counters_share_the_family() {
        static ROUTES: [&str; 2] = ["/a", "/b/{x}"];
        let m = std::sync::Arc::new(Metrics::new());
        let c = m.request_counters("main", &ROUTES);
        c.inc(1, 200);
        c.inc(1, 200);
        c.inc(0, 299); // not a known status: the slow path
        c.inc(7, 404); // out of range: "other"
        m.count_request("main", "/b/{x}", 200);
        let out = m.render(&[]);
        for want in [
            "credbroker_http_requests_total{listener=\"main\",route=\"/b/{x}\",status=\"200\"} 3",
            "credbroker_http_requests_total{listener=\"main\",route=\"/a\",status=\"299\"} 1",
            "credbroker_http_requests_total{listener=\"main\",route=\"other\",status=\"404\"} 1",
        ] {
            assert!(out.contains(want), "missing {want:?} in\n{out}");
        }
    }

    #[test]
    fn a_forgotten_profile_is_no_longer_reported() {
        let m = Metrics::new();
        let old = m.refresh_counters("gone");
        old.success.inc();
        m.refresh_counters("kept").success.inc();
        m.forget_profile("gone");
        // A late increment by the stopping refresher goes nowhere.
        old.failure.inc();
        let out = m.render(&[]);
        assert!(!out.contains("gone"), "{out}");
        assert!(out.contains("profile=\"kept\""), "{out}");
    }

    #[test]
    fn timer_records_failures_too() {
        let m = Metrics::new();
        let t = m.upstream_timer();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let r: Result<(), &str> = rt.block_on(t.time(Call::IdpRefresh, async { Err("down") }));
        assert!(r.is_err());
        let out = m.render(&[]);
        assert!(
            out.contains(
                "credbroker_upstream_request_duration_seconds_count{call=\"idp_refresh\"} 1"
            ),
            "{out}"
        );
    }
}
