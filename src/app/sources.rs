//! Where each profile's [`CredentialSource`] comes from: the seam through
//! which tests run the whole app with a fake upstream. The real factory
//! ([`UpstreamSources`]) shares one [`Login`] between all profiles that name
//! the same refresh-token file, so a rotating token is refreshed once (one
//! mutex, one cached id_token) however many roles it feeds.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};

use crate::clock::SharedClock;
use crate::config::{LoginConfig, ProfileConfig, token_file_key};
use crate::metrics::UpstreamTimer;
use crate::upstream::{Chain, CredentialSource, Login, UpstreamError, aws};

/// Builds a profile's credential source.
pub trait SourceFactory: Send + Sync + 'static {
    /// The source type.
    type Source: CredentialSource;
    /// A source for `profile` (creates clients; no upstream I/O).
    fn build(
        &self,
        profile: &ProfileConfig,
    ) -> impl Future<Output = Result<Self::Source, UpstreamError>> + Send;

    /// Forget the session state kept in memory for `token_file` (a sign-in
    /// or sign-out replaced the token): no rotated token or id_token of the
    /// old session is used again. The login itself stays shared, so a
    /// refresh still in flight and the next one are serialized by its lock.
    fn reset(&self, token_file: &std::path::Path) -> impl Future<Output = ()> + Send {
        let _ = token_file;
        async {}
    }
}

/// The real upstream: a [`Chain`] per profile, logins shared per token file.
pub struct UpstreamSources {
    clock: SharedClock,
    /// Upstream call latencies (`credbroker_upstream_request_duration_seconds`).
    timer: UpstreamTimer,
    /// Token file → the login using it (weak: a login lives as long as the
    /// profiles using it).
    logins: Mutex<HashMap<PathBuf, (LoginConfig, Weak<Login>)>>,
}

impl UpstreamSources {
    /// A factory using `clock`, timing upstream calls into `timer`.
    pub fn new(clock: SharedClock, timer: UpstreamTimer) -> Self {
        UpstreamSources {
            clock,
            timer,
            logins: Mutex::default(),
        }
    }

    /// The live login for the profile's token file if it has the same
    /// settings, else a new one (registered for the next profile).
    fn login_for(
        &self,
        profile: &ProfileConfig,
        sdk: &aws_config::SdkConfig,
    ) -> Result<Arc<Login>, UpstreamError> {
        let Some(file) = profile.login.refresh_token_file() else {
            return Ok(Arc::new(Login::build(
                profile,
                sdk,
                self.clock.clone(),
                &self.timer,
            )?));
        };
        let key = token_file_key(file);
        let mut map = self.logins.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (_, w)| w.strong_count() > 0);
        if let Some((cfg, weak)) = map.get(&key)
            && cfg.same_login(&profile.login)
            && let Some(login) = weak.upgrade()
        {
            tracing::debug!(profile = %profile.name, file = %file.display(), "sharing the login of another profile on this refresh-token file");
            return Ok(login);
        }
        let login = Arc::new(Login::build(profile, sdk, self.clock.clone(), &self.timer)?);
        map.insert(key, (profile.login.clone(), Arc::downgrade(&login)));
        Ok(login)
    }
}

impl SourceFactory for UpstreamSources {
    type Source = Chain;

    async fn reset(&self, token_file: &std::path::Path) {
        let login = {
            let map = self.logins.lock().unwrap_or_else(|p| p.into_inner());
            map.get(&token_file_key(token_file))
                .and_then(|(_, w)| w.upgrade())
        };
        if let Some(login) = login {
            login.reset().await;
        }
    }

    async fn build(&self, profile: &ProfileConfig) -> Result<Chain, UpstreamError> {
        let sdk = aws::sdk_config(profile).await;
        let login = self.login_for(profile, &sdk)?;
        Ok(Chain::with_login(
            profile,
            &sdk,
            login,
            self.clock.clone(),
            &self.timer,
        ))
    }
}
