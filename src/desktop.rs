//! Desktop notifications: one when a profile comes to need a sign-in (the
//! status reporter calls [`login_required`] once per transition). Built with
//! the `desktop-notify` cargo feature (default) on Linux, through
//! `notify-rust` on the session D-Bus (`org.freedesktop.Notifications`);
//! elsewhere, or with no session bus (a container, a headless host), nothing
//! happens. The daemon never opens a browser: the notification names the
//! command to run.

/// Tell the desktop user that `profiles` (sharing one sign-in) need
/// `credbroker login`. Returns at once (the D-Bus call runs on a thread of
/// its own); a failure is logged at debug level only, since most hosts have
/// no notification server.
pub fn login_required(profiles: &[String]) {
    let Some(first) = profiles.first() else {
        return;
    };
    let summary = "credbroker: sign-in needed".to_owned();
    let who = if profiles.len() == 1 {
        format!("Profile {first} needs")
    } else {
        format!("Profiles {} need", profiles.join(", "))
    };
    let body = format!("{who} a new sign-in: run `credbroker login --profile {first}`");
    show(summary, body);
}

#[cfg(all(feature = "desktop-notify", target_os = "linux"))]
fn show(summary: String, body: String) {
    // notify-rust's blocking call runs zbus on a runtime of its own, which
    // must not start inside ours: a plain thread.
    let spawned = std::thread::Builder::new()
        .name("desktop-notify".into())
        .spawn(move || {
            let sent = notify_rust::Notification::new()
                .appname("credbroker")
                .summary(&summary)
                .body(&body)
                .icon("dialog-password")
                .urgency(notify_rust::Urgency::Normal)
                .show();
            match sent {
                Ok(_) => tracing::debug!("desktop notification sent"),
                Err(e) => tracing::debug!(error = %e, "no desktop notification (no session bus or notification server)"),
            }
        });
    if let Err(e) = spawned {
        tracing::debug!(error = %e, "cannot start the desktop-notification thread");
    }
}

#[cfg(not(all(feature = "desktop-notify", target_os = "linux")))]
fn show(summary: String, body: String) {
    let _ = (summary, body);
}
