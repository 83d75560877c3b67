//! systemd integration, all no-ops outside systemd: the notify protocol
//! (`READY=1`, `STATUS=`, `WATCHDOG=1`, `STOPPING=1` over `NOTIFY_SOCKET`,
//! through `sd-notify`) and socket activation (a listener inherited through
//! `LISTEN_FDS`/`LISTEN_PID`, through `listenfd`, which owns the one unsafe
//! `from_raw_fd` this crate forbids itself).
//!
//! The inherited socket gets the same rule as a configured one: it must be
//! bound to a loopback address, or the daemon refuses to start.

use std::net::SocketAddr;
use std::time::Duration;

use crate::error::StartupError;

/// The listener systemd handed us (socket activation), if any: the first
/// inherited TCP socket. A non-TCP or non-loopback one is a usage error.
pub fn inherited_listener() -> Result<Option<std::net::TcpListener>, StartupError> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    let listener = fds
        .take_tcp_listener(0)
        .map_err(|e| {
            StartupError::Usage(format!(
                "the socket passed by systemd (LISTEN_FDS) is unusable: {e}"
            ))
        })?
        .ok_or_else(|| {
            StartupError::Usage(
                "the socket passed by systemd (LISTEN_FDS) is not a TCP socket; credbroker.socket \
                 must use ListenStream=127.0.0.1:PORT"
                    .into(),
            )
        })?;
    let addr: SocketAddr = listener.local_addr().map_err(|e| {
        StartupError::Other(format!("cannot read the inherited socket's address: {e}"))
    })?;
    if !crate::net::is_loopback(addr.ip()) {
        return Err(StartupError::Usage(format!(
            "the socket passed by systemd is bound to {addr}, which is not a loopback address; \
             credbroker serves credentials on loopback only (ListenStream=127.0.0.1:PORT)"
        )));
    }
    listener
        .set_nonblocking(true)
        .map_err(|e| StartupError::Other(format!("cannot use the inherited socket: {e}")))?;
    Ok(Some(listener))
}

/// `READY=1` with a status line.
pub fn ready(status: &str) {
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
}

/// A `STATUS=` line (what `systemctl status` shows).
pub fn status(status: &str) {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(status)]);
}

/// `STOPPING=1`.
pub fn stopping() {
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("shutting down"),
    ]);
}

/// `WATCHDOG=1`.
pub fn watchdog() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
}

/// How often to ping the watchdog (half of `WATCHDOG_USEC`), if enabled.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}
