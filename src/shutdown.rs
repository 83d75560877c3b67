//! Process signals: SIGINT/SIGTERM end the daemon gracefully, SIGHUP asks every
//! refresher to retry now (e.g. after a new refresh token was written).

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// A stream of SIGHUP arrivals (never yields off Unix).
pub struct Hangup {
    #[cfg(unix)]
    inner: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    /// Install the SIGHUP handler.
    pub fn new() -> Self {
        Self {
            #[cfg(unix)]
            inner: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
        }
    }

    /// Wait for the next SIGHUP.
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(s) = self.inner.as_mut()
            && s.recv().await.is_some()
        {
            return;
        }
        std::future::pending::<()>().await
    }
}

impl Default for Hangup {
    fn default() -> Self {
        Self::new()
    }
}
