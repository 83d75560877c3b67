//! Commands from the admin API to the app: a sign-in or sign-out finished
//! for a profile. The server only sends them (it never reaches the
//! supervisor or upstream itself); the app's reload loop, which owns the
//! supervisor, applies them and answers with the profiles affected
//! (profiles sharing one refresh-token file share one sign-in).

use tokio::sync::{mpsc, oneshot};

/// What happened to a profile's sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `credbroker login` stored a new refresh token: drop the old identity's
    /// credentials and refresh at once.
    LoggedIn,
    /// `credbroker logout`: stop refreshing and drop the credentials now.
    LoggedOut,
}

/// One command and where its answer goes.
#[derive(Debug)]
pub struct Request {
    /// The profile named in the request.
    pub profile: String,
    /// What happened.
    pub command: Command,
    /// The profiles affected, or why nothing was done.
    pub reply: oneshot::Sender<Result<Vec<String>, Refusal>>,
}

/// Why a command was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No such profile.
    #[error("no profile named {0:?}")]
    UnknownProfile(String),
    /// The profile exists but cannot do it (e.g. it has no sign-in).
    #[error("{0}")]
    Invalid(String),
    /// The app is not taking commands (shutting down).
    #[error("the daemon is not taking commands (shutting down?)")]
    Unavailable,
}

/// The sending side, held by the server.
#[derive(Debug, Clone)]
pub struct Control(mpsc::Sender<Request>);

/// The receiving side, held by the app.
pub type Receiver = mpsc::Receiver<Request>;

impl Control {
    /// A channel for commands.
    pub fn channel() -> (Control, Receiver) {
        let (tx, rx) = mpsc::channel(16);
        (Control(tx), rx)
    }

    /// Send `command` for `profile` and wait for the answer.
    pub async fn send(&self, profile: &str, command: Command) -> Result<Vec<String>, Refusal> {
        let (reply, answer) = oneshot::channel();
        let req = Request {
            profile: profile.to_owned(),
            command,
            reply,
        };
        self.0.send(req).await.map_err(|_| Refusal::Unavailable)?;
        answer.await.unwrap_or(Err(Refusal::Unavailable))
    }
}
