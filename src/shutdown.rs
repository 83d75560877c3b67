//! Process signals: SIGINT/SIGTERM end the daemon gracefully, SIGHUP asks every
//! refresher to retry now (e.g. after a new refresh token was written).

/// Resolves when SIGINT or SIGTERM arrives. The handlers are installed when
/// this is called, not when the future is first polled: a SIGTERM during
/// start-up must mean a graceful stop, not the default action (death).
pub fn signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let mut handlers = {
        use tokio::signal::unix::{SignalKind, signal};
        [SignalKind::terminate(), SignalKind::interrupt()].map(|k| signal(k).ok())
    };
    async move {
        #[cfg(unix)]
        {
            let [term, int] = &mut handlers;
            let wait = |s: &mut Option<tokio::signal::unix::Signal>| {
                let s = s.take();
                async move {
                    match s {
                        Some(mut s) => {
                            s.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                }
            };
            tokio::select! {
                () = wait(term) => {},
                () = wait(int) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
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
