//! The audit trail: which local process fetched which credentials.
//!
//! * The server classifies each credential request ([`Route`], profile,
//!   [`Outcome`]) in its audit layer and records it on the connection's
//!   [`Connection`]. Connections are long-lived (SDKs keep them), so a
//!   connection yields one `fetch` event per profile, route and outcome the
//!   first time it happens, and one `close` event with the counts when it
//!   ends — not a line per request.
//! * Events go over a bounded channel to one writer thread: the serving path
//!   never waits on a disk or a full channel (an event that does not fit is
//!   dropped, counted and warned about).
//! * The caller's pid and executable come from the socket inode the kernel
//!   gave [`crate::peer`]: the process whose `/proc/<pid>/fd` holds
//!   `socket:[inode]` (readable for our own uid's processes, or any as root,
//!   else "unknown"). Found at the connection's first credential request,
//!   before it is answered — the one moment the client surely still holds
//!   the socket (an `aws` process may close it and exit a millisecond after
//!   the answer) — in a blocking task awaited for at most
//!   [`RESOLVE_WAIT`]; only when `audit.log` is on.
//! * The writer writes JSON lines (`audit.log = "<path>"`: mode 0600,
//!   rotated to `<path>.1` by size) or log events (`audit.log = "journal"`:
//!   target `credbroker::audit`, which systemd sends to the journal), and
//!   keeps the last callers per profile for `/v1/status`.
//!
//! No event carries a secret: its fields are names, numbers, the peer
//! address, the executable path and a fixed refusal reason.

use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Instant, SystemTime};

use serde::Serialize;

use crate::creds::rfc3339;
use crate::peer::PeerCred;

/// Where audit events go (`[audit]`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AuditLog {
    /// None are written (`"off"`, the default); `status` still shows the
    /// last callers' uids.
    #[default]
    Off,
    /// As log events on stderr, which systemd sends to the journal.
    Journal,
    /// JSON lines appended to this file (0600), moved to `<path>.1` when it
    /// would grow past `max_bytes`.
    File {
        /// The file.
        path: PathBuf,
        /// Rotation size.
        max_bytes: u64,
    },
}

/// Default `audit.max_size`.
pub const DEFAULT_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// Events waiting for the writer at most; more are dropped and counted.
const QUEUE: usize = 4096;
/// Last callers kept per profile.
const RECENT: usize = 5;
/// Longest a connection's first credential request waits for its process
/// to be found (usually well under a millisecond: the last callers' pids
/// are checked first); later, the answer goes out and the event says
/// "unknown".
pub const RESOLVE_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// How credentials were asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Route {
    /// `GET /latest/meta-data/iam/security-credentials[-extended]/<role>`.
    Imds,
    /// `GET /v1/credentials[/<profile>]` from an SDK.
    Ecs,
    /// The same from `credbroker credential-process`.
    CredentialProcess,
}

/// What the caller got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Credentials.
    Served,
    /// A refusal, and why (a fixed phrase, never request data).
    Refused(String),
}

/// One connection's caller and tally, shared by its requests (created by
/// `server::serve` per accepted connection).
#[derive(Debug)]
pub struct Connection {
    /// The client's address.
    pub peer: SocketAddr,
    /// Our end (where the kernel lookup starts); `None`: no lookup.
    local: Option<SocketAddr>,
    /// Who the kernel says it is: looked up once, when first needed (a uid
    /// check, or the audit trail), never for a connection that needs neither.
    caller: OnceLock<Option<PeerCred>>,
    /// Its process, once found ([`Connection::resolve`]).
    process: OnceLock<Option<Proc>>,
    tally: Mutex<Option<Tally>>,
}

#[derive(Debug)]
struct Tally {
    audit: Audit,
    opened: Instant,
    /// Per profile and route; nearly always one entry, so a list (no key
    /// allocation per request).
    counts: Vec<(String, Route, Counts)>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    served: u64,
    refused: u64,
}

impl Connection {
    /// A new connection from `peer` to our `local` address.
    pub fn new(peer: SocketAddr, local: Option<SocketAddr>) -> Self {
        Connection {
            peer,
            local: local.filter(|_| crate::net::is_loopback(peer.ip())),
            caller: OnceLock::new(),
            process: OnceLock::new(),
            tally: Mutex::new(None),
        }
    }

    /// A connection whose caller is already known (tests, fuzzing).
    pub fn with_caller(peer: SocketAddr, cred: Option<PeerCred>) -> Self {
        let c = Connection::new(peer, None);
        let _ = c.caller.set(cred);
        c
    }

    /// Who the caller is, looked up now if nobody asked yet (one `sock_diag`
    /// round trip, tens of microseconds, once per connection).
    pub fn who(&self) -> Option<PeerCred> {
        *self.caller.get_or_init(|| {
            let local = self.local?;
            crate::peer::lookup(local, self.peer).ok().flatten()
        })
    }

    /// The caller if it was looked up already; never looks up.
    pub fn known(&self) -> Option<PeerCred> {
        self.caller.get().copied().flatten()
    }

    /// Find the caller's process (pid, executable) if `audit` writes events
    /// and nobody did yet, waiting at most [`RESOLVE_WAIT`]. Call before
    /// answering the connection's first credential request.
    pub async fn resolve(self: &Arc<Self>, audit: &Audit) {
        if !audit.enabled() || self.process.get().is_some() {
            return;
        }
        let Some(cred) = self.who() else {
            let _ = self.process.set(None);
            return;
        };
        // Fast path, inline: the last callers' pids, newest descriptors
        // first (procfs is memory, not disk: a few syscalls, like the uid
        // lookup itself).
        if let Some(p) = find_among(cred.inode, &audit.hints) {
            let _ = self.process.set(Some(p));
            return;
        }
        // A new process: every process of the uid, off the runtime workers.
        let (me, hints) = (self.clone(), audit.hints.clone());
        let task = tokio::task::spawn_blocking(move || {
            let _ = me.process.set(find_by_uid(cred, &hints));
        });
        let _ = tokio::time::timeout(RESOLVE_WAIT, task).await;
    }

    fn proc(&self) -> Option<Proc> {
        self.process.get().cloned().flatten()
    }

    /// Record one credential request; emits a `fetch` event the first time
    /// this connection gets this outcome kind for this profile and route.
    pub fn record(&self, audit: &Audit, profile: &str, route: Route, outcome: Outcome) {
        let mut guard = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        let opens = guard.is_none();
        let tally = guard.get_or_insert_with(|| Tally {
            audit: audit.clone(),
            opened: Instant::now(),
            counts: Vec::new(),
        });
        let mine = |(p, r, _): &&mut (String, Route, Counts)| p == profile && *r == route;
        if !tally.counts.iter_mut().any(|e| mine(&e)) {
            tally
                .counts
                .push((profile.to_owned(), route, Counts::default()));
        }
        let Some((_, _, c)) = tally.counts.iter_mut().find(mine) else {
            return;
        };
        let first = match outcome {
            Outcome::Served => {
                c.served += 1;
                c.served == 1
            }
            Outcome::Refused(_) => {
                c.refused += 1;
                c.refused == 1
            }
        };
        if first {
            audit.send(Event {
                time: SystemTime::now(),
                kind: Kind::Fetch(outcome),
                opens,
                profile: profile.to_owned(),
                route,
                peer: self.peer,
                cred: self.known(),
                proc: self.proc(),
            });
        }
    }

    /// The connection ended: a `close` event per profile and route it read.
    pub fn finish(&self) {
        let Some(tally) = self.tally.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let seconds = tally.opened.elapsed().as_secs_f64();
        for (profile, route, c) in tally.counts {
            tally.audit.send(Event {
                time: SystemTime::now(),
                kind: Kind::Close {
                    served: c.served,
                    refused: c.refused,
                    seconds,
                },
                opens: false,
                profile,
                route,
                peer: self.peer,
                cred: self.known(),
                proc: self.proc(),
            });
        }
    }
}

#[derive(Debug)]
struct Event {
    time: SystemTime,
    kind: Kind,
    /// The connection's first event (counts a connection in the recent list).
    opens: bool,
    profile: String,
    route: Route,
    peer: SocketAddr,
    cred: Option<PeerCred>,
    proc: Option<Proc>,
}

#[derive(Debug)]
enum Kind {
    Fetch(Outcome),
    Close {
        served: u64,
        refused: u64,
        seconds: f64,
    },
}

/// A recent caller of one profile, as `/v1/status` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecentCaller {
    /// Its uid (`None`: unknown).
    pub uid: Option<u32>,
    /// Its pid (`None`: unknown, or `audit.log` is off).
    pub pid: Option<u32>,
    /// Its executable (`None` likewise).
    pub exe: Option<String>,
    /// How it asked.
    pub route: Route,
    /// When it last opened a connection and fetched (RFC 3339).
    pub last: String,
    /// Connections it fetched on, since the daemon started.
    pub connections: u64,
    /// Whether its last fetch was refused.
    pub refused: bool,
}

/// Last callers per profile (writer: the audit writer, or the serving path
/// when `audit.log` is off; reader: `/v1/status`).
#[derive(Debug, Default)]
struct Recent(Mutex<HashMap<String, VecDeque<RecentCaller>>>);

impl Recent {
    fn note(&self, profile: &str, mut c: RecentCaller) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let list = m.entry(profile.to_owned()).or_default();
        if let Some(i) = list
            .iter()
            .position(|o| (o.uid, o.pid, &o.exe, o.route) == (c.uid, c.pid, &c.exe, c.route))
            && let Some(old) = list.remove(i)
        {
            c.connections += old.connections;
        }
        list.push_front(c);
        list.truncate(RECENT);
    }

    fn get(&self, profile: &str) -> Vec<RecentCaller> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.get(profile)
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// The audit trail's handle: cheap to clone, never blocks.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    /// To the writer thread; `None` when `audit.log` is off.
    tx: Option<mpsc::SyncSender<Event>>,
    recent: Arc<Recent>,
    dropped: Arc<std::sync::atomic::AtomicU64>,
    /// The last pids found behind sockets, checked first (a client usually
    /// opens many connections).
    hints: Arc<Mutex<VecDeque<u32>>>,
}

impl Audit {
    /// No events written (tests, fuzzing, `audit.log = "off"`).
    pub fn off() -> Self {
        Audit::default()
    }

    /// Start the writer for `log`. The file is opened (and created 0600)
    /// here, so a path that cannot be written is a start-up error.
    pub fn start(log: &AuditLog) -> std::io::Result<Self> {
        let out = match log {
            AuditLog::Off => return Ok(Audit::off()),
            AuditLog::Journal => Output::Journal,
            AuditLog::File { path, max_bytes } => Output::File(Rotating::open(path, *max_bytes)?),
        };
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let audit = Audit {
            tx: Some(tx),
            ..Audit::default()
        };
        std::thread::Builder::new()
            .name("credbroker-audit".into())
            .spawn(move || writer(rx, out))?;
        Ok(audit)
    }

    /// The last callers of `profile`, newest first.
    pub fn recent(&self, profile: &str) -> Vec<RecentCaller> {
        self.recent.get(profile)
    }

    /// Whether events are written (`audit.log` is not off).
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Events dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn send(&self, e: Event) {
        if let Kind::Fetch(o) = &e.kind {
            self.recent
                .note(&e.profile, recent_of(&e, o, e.proc.as_ref()));
        }
        let Some(tx) = &self.tx else {
            return; // off: the last callers only
        };
        if tx.try_send(e).is_err() {
            let n = self
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if (n + 1).is_power_of_two() {
                tracing::warn!(
                    dropped = n + 1,
                    "audit writer is behind; audit events dropped"
                );
            }
        }
    }
}

/// RFC 3339 with milliseconds (the wire format's [`rfc3339`] has seconds).
fn millis(t: SystemTime) -> String {
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_millis())
        .unwrap_or(0);
    let s = rfc3339(t);
    format!("{}.{ms:03}Z", s.trim_end_matches('Z'))
}

fn recent_of(e: &Event, o: &Outcome, proc: Option<&Proc>) -> RecentCaller {
    RecentCaller {
        uid: e.cred.map(|c| c.uid),
        pid: proc.map(|p| p.pid),
        exe: proc.map(|p| p.exe.clone()),
        route: e.route,
        last: rfc3339(e.time),
        connections: u64::from(e.opens),
        refused: matches!(o, Outcome::Refused(_)),
    }
}

/// A process found behind a socket.
#[derive(Debug, Clone)]
struct Proc {
    pid: u32,
    exe: String,
}

enum Output {
    Journal,
    File(Rotating),
}

/// The writer thread: write each event, flushing whenever the queue is
/// empty (one write per burst, not per event); ends when every sender is
/// gone (the daemon exits).
fn writer(rx: mpsc::Receiver<Event>, mut out: Output) {
    while let Ok(first) = rx.recv() {
        // Let a burst gather: one wake-up per 10 ms at most, not one per
        // event (a parked receiver costs every send a futex wake).
        std::thread::sleep(std::time::Duration::from_millis(10));
        let mut next = Some(first);
        while let Some(e) = next.take() {
            match &mut out {
                Output::Journal => journal(&e, e.proc.as_ref()),
                Output::File(f) => f.push(&e),
            }
            next = rx.try_recv().ok();
        }
        if let Output::File(f) = &mut out {
            f.flush();
        }
    }
}

fn json_of(e: &Event, proc: Option<&Proc>) -> serde_json::Value {
    let mut v = serde_json::json!({
        "time": millis(e.time),
        "profile": e.profile,
        "route": e.route,
        "uid": e.cred.map(|c| c.uid),
        "pid": proc.map(|p| p.pid),
        "exe": proc.map_or("unknown", |p| p.exe.as_str()),
        "peer": e.peer.to_string(),
    });
    match &e.kind {
        Kind::Fetch(Outcome::Served) => {
            v["event"] = "fetch".into();
            v["outcome"] = "served".into();
        }
        Kind::Fetch(Outcome::Refused(why)) => {
            v["event"] = "fetch".into();
            v["outcome"] = "refused".into();
            v["reason"] = why.as_str().into();
        }
        Kind::Close {
            served,
            refused,
            seconds,
        } => {
            v["event"] = "close".into();
            v["served"] = (*served).into();
            v["refused"] = (*refused).into();
            v["seconds"] = ((seconds * 1000.0).round() / 1000.0).into();
        }
    }
    v
}

fn journal(e: &Event, proc: Option<&Proc>) {
    let uid = e.cred.map(|c| c.uid);
    let pid = proc.map(|p| p.pid);
    let exe = proc.map_or("unknown", |p| p.exe.as_str());
    let (profile, route, peer) = (&e.profile, e.route, e.peer);
    match &e.kind {
        Kind::Fetch(Outcome::Served) => tracing::info!(
            target: "credbroker::audit", event = "fetch", outcome = "served",
            profile = %profile, route = ?route, uid, pid, exe, %peer, "credentials served"),
        Kind::Fetch(Outcome::Refused(why)) => tracing::info!(
            target: "credbroker::audit", event = "fetch", outcome = "refused", reason = %why,
            profile = %profile, route = ?route, uid, pid, exe, %peer, "credentials refused"),
        Kind::Close {
            served,
            refused,
            seconds,
        } => tracing::info!(
            target: "credbroker::audit", event = "close", served, refused, seconds,
            profile = %profile, route = ?route, uid, pid, exe, %peer, "connection closed"),
    }
}

/// Does `pid` hold socket `inode`? Its newest descriptors are read first: a
/// client's connection is usually its highest-numbered descriptor.
fn holds(pid: u32, inode: u32) -> bool {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let mut fds: Vec<u32> = dir
        .flatten()
        .filter_map(|d| d.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable_by(|a, b| b.cmp(a));
    let target = format!("socket:[{inode}]");
    fds.into_iter().any(|fd| {
        std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
            .is_ok_and(|l| l.as_os_str() == target.as_str())
    })
}

/// `pid`, its executable (read each time: a pid can exec another program).
fn describe(pid: u32, hints: &Mutex<VecDeque<u32>>) -> Proc {
    if let Ok(mut h) = hints.lock() {
        h.retain(|p| *p != pid);
        h.push_front(pid);
        h.truncate(8);
    }
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "unknown".into());
    Proc { pid, exe }
}

fn recent_pids(hints: &Mutex<VecDeque<u32>>) -> Vec<u32> {
    hints
        .lock()
        .map(|h| h.iter().copied().collect())
        .unwrap_or_default()
}

/// The process holding socket `inode`, among the recently found pids (a
/// client usually opens many connections).
fn find_among(inode: u32, hints: &Mutex<VecDeque<u32>>) -> Option<Proc> {
    let pid = recent_pids(hints).into_iter().find(|p| holds(*p, inode))?;
    Some(describe(pid, hints))
}

/// The process holding socket `c.inode`, among every process of the
/// caller's uid. `None` when it is gone, or its `/proc/<pid>/fd` is not ours
/// to read.
///
/// Hand-written: no maintained crate answers "which process owns this
/// socket inode" without reading all of `/proc` into structs first.
fn find_by_uid(c: PeerCred, hints: &Mutex<VecDeque<u32>>) -> Option<Proc> {
    let recent = recent_pids(hints);
    let pid = std::fs::read_dir("/proc").ok()?.flatten().find_map(|d| {
        let pid: u32 = d.file_name().to_str()?.parse().ok()?;
        (owner(&d.path()) == Some(c.uid) && !recent.contains(&pid) && holds(pid, c.inode))
            .then_some(pid)
    })?;
    Some(describe(pid, hints))
}

fn owner(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).ok().map(|m| m.uid())
}

/// An append-only file moved to `<path>.1` when the next line would take it
/// past `max_bytes` (one old generation kept).
struct Rotating {
    path: PathBuf,
    file: std::fs::File,
    size: u64,
    max_bytes: u64,
    /// Lines not written yet (see [`writer`]).
    pending: Vec<u8>,
}

impl Rotating {
    fn open(path: &Path, max_bytes: u64) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt as _;
        if let Some(dir) = path.parent() {
            crate::fsutil::ensure_private_dir(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)?;
        let size = file.metadata()?.len();
        Ok(Rotating {
            path: path.to_owned(),
            file,
            size,
            max_bytes,
            pending: Vec::new(),
        })
    }

    /// Queue one event's line; written at the next [`Rotating::flush`] (or
    /// now, past 64 KiB).
    fn push(&mut self, e: &Event) {
        let mut line = serde_json::to_vec(&json_of(e, e.proc.as_ref())).unwrap_or_default();
        line.push(b'\n');
        self.push_line(&line);
    }

    /// Queue `line`, first writing what is queued and moving the file to
    /// `<path>.1` if the line would take it past `max_bytes`.
    fn push_line(&mut self, line: &[u8]) {
        let queued = self.size + self.pending.len() as u64;
        if queued > 0 && queued + line.len() as u64 > self.max_bytes {
            self.flush();
            if let Err(err) = self.rotate() {
                tracing::warn!(path = %self.path.display(), error = %err, "cannot rotate the audit log");
            }
        }
        self.pending.extend_from_slice(line);
        if self.pending.len() >= 64 * 1024 {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let lines = std::mem::take(&mut self.pending);
        match self.file.write_all(&lines) {
            Ok(()) => self.size += lines.len() as u64,
            Err(err) => {
                tracing::warn!(path = %self.path.display(), error = %err, "cannot write the audit log")
            }
        }
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        std::fs::rename(&self.path, &old)?;
        *self = Rotating::open(&self.path, self.max_bytes)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_for(path: &Path, lines: usize) -> Vec<serde_json::Value> {
        for _ in 0..200 {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let got: Vec<_> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            if got.len() >= lines {
                return got;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("audit log {} never reached {lines} lines", path.display());
    }

    #[tokio::test]
    async fn a_connection_logs_its_first_fetches_and_a_count_at_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit").join("audit.jsonl");
        let audit = Audit::start(&AuditLog::File {
            path: path.clone(),
            max_bytes: DEFAULT_MAX_BYTES,
        })
        .unwrap();
        // A real connection of ours, so the writer can find this process.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = l.local_addr().unwrap();
        let client = std::net::TcpStream::connect(local).unwrap();
        let (_server, peer) = l.accept().unwrap();
        let conn = Arc::new(Connection::new(peer, Some(local)));
        assert!(conn.known().is_none(), "looked up before anyone asked");
        conn.resolve(&audit).await;
        assert_eq!(
            conn.known().map(|c| c.uid),
            Some(crate::fsutil::current_uid())
        );
        for _ in 0..3 {
            conn.record(&audit, "default", Route::Ecs, Outcome::Served);
        }
        conn.record(
            &audit,
            "default",
            Route::Ecs,
            Outcome::Refused("bad token".into()),
        );
        conn.record(
            &audit,
            "default",
            Route::Ecs,
            Outcome::Refused("bad token".into()),
        );
        conn.finish();
        let lines = wait_for(&path, 3);
        assert_eq!(lines.len(), 3, "{lines:?}");
        let me = std::process::id();
        let exe = std::env::current_exe().unwrap().display().to_string();
        assert_eq!(lines[0]["event"], "fetch");
        let time = lines[0]["time"].as_str().unwrap();
        assert!(
            time.len() == 24 && time.ends_with('Z') && &time[19..20] == ".",
            "{time}"
        );
        assert_eq!(lines[0]["outcome"], "served");
        assert_eq!(lines[1]["outcome"], "refused");
        assert_eq!(lines[1]["reason"], "bad token");
        assert_eq!(lines[2]["event"], "close");
        assert_eq!(
            (lines[2]["served"].as_u64(), lines[2]["refused"].as_u64()),
            (Some(3), Some(2))
        );
        for l in &lines {
            assert_eq!(l["pid"].as_u64(), Some(u64::from(me)), "{l}");
            assert_eq!(l["exe"], exe.as_str());
            assert_eq!(
                l["uid"].as_u64(),
                Some(u64::from(crate::fsutil::current_uid()))
            );
            assert_eq!(l["route"], "ecs");
            assert_eq!(l["peer"], peer.to_string());
        }
        let recent = audit.recent("default");
        assert_eq!(recent.len(), 1, "{recent:?}");
        assert_eq!(recent[0].pid, Some(me));
        assert!(recent[0].refused);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        drop(client);
    }

    #[test]
    fn the_file_rotates_by_size_and_keeps_one_generation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let mut r = Rotating::open(&path, 100).unwrap();
        for i in 0..5 {
            r.push_line(format!("{{\"n\":{i},\"pad\":\"{}\"}}\n", "x".repeat(30)).as_bytes());
            if i % 2 == 0 {
                r.flush(); // batches and single lines alike
            }
        }
        r.flush();
        let now = std::fs::read_to_string(&path).unwrap();
        let old = std::fs::read_to_string(dir.path().join("a.jsonl.1")).unwrap();
        assert!(now.len() <= 100 && old.len() <= 100, "{now:?} {old:?}");
        assert!(now.contains("\"n\":4"));
        assert!(old.contains("\"n\":2") || old.contains("\"n\":3"));
        assert!(!dir.path().join("a.jsonl.2").exists());
    }

    #[test]
    fn off_keeps_the_last_callers_without_a_writer() {
        let audit = Audit::off();
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        // Off: nothing is resolved, even on request.
        let c = Arc::new(Connection::with_caller(
            peer,
            Some(PeerCred { uid: 1, inode: 1 }),
        ));
        futures_util::FutureExt::now_or_never(c.resolve(&audit)).unwrap();
        assert!(c.proc().is_none());
        for i in 0..7u32 {
            let c = Connection::with_caller(
                peer,
                Some(PeerCred {
                    uid: 1000 + i % 2,
                    inode: i + 1,
                }),
            );
            c.record(&audit, "p", Route::Imds, Outcome::Served);
            c.finish();
        }
        let r = audit.recent("p");
        // Two distinct callers (uids 1000 and 1001), newest first, counted.
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r[0].uid, Some(1000));
        assert_eq!(r[0].connections + r[1].connections, 7);
        assert_eq!(r[0].pid, None);
        assert!(audit.recent("other").is_empty());
    }
}
