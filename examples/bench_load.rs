//! Load generator for `bench/` (issue 13): drives one server with N
//! concurrent HTTP/1.1 clients for a fixed time and prints one JSON line of
//! figures. Written by hand (raw TCP, pre-rendered requests) because `oha`,
//! the load generator of the full run, does one URL per run and the IMDSv2
//! credential fetch is a three-request sequence whose second and third
//! requests depend on the first's answer; the same code drives every server,
//! so ratios stay fair. Also the load generator of the quick mode (no
//! crates.io build of `oha` in CI) and of the amplification and footprint
//! figures.
//!
//! ```text
//! bench_load ADDR MODE CONNS SECS [--close] [--auth TOKEN] [--path P] [--think-ms N]
//!   MODE ecs    GET P (default /v1/credentials/default; Authorization: TOKEN)
//!        imds   PUT /latest/api/token, GET …/security-credentials/, GET …/<role>
//!               (one sample = the whole sequence)
//!        mixed  odd clients ecs, even clients imds (one token per connection,
//!               renewed on a 401), each answer's Expiration checked
//!        hold   every client makes one ecs request, then keeps its
//!               connection open and idle for SECS
//!   --close     one connection per sample (`Connection: close`)
//!   --think-ms  pause between samples per client
//! ```
//! Output: `{"samples","requests","errors","error_samples","secs","per_s",
//! "p50_us","p99_us","p999_us","keys"}`; an error is an I/O failure, a non-200
//! answer, or (mixed) a missing or expired `Expiration`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Ecs,
    Imds,
    Mixed,
    Hold,
}

#[derive(Clone, Debug)]
struct Opts {
    addr: String,
    mode: Mode,
    conns: usize,
    secs: f64,
    close: bool,
    auth: String,
    think: Duration,
    path: String,
}

fn parse_args() -> Result<Opts, Error> {
    let mut args = std::env::args().skip(1);
    let mut next = |what: &str| args.next().ok_or_else(|| format!("missing {what}"));
    let addr = next("ADDR")?;
    let mode = match next("MODE")?.as_str() {
        "ecs" => Mode::Ecs,
        "imds" => Mode::Imds,
        "mixed" => Mode::Mixed,
        "hold" => Mode::Hold,
        m => return Err(format!("unknown mode {m:?}").into()),
    };
    let conns = next("CONNS")?.parse()?;
    let secs = next("SECS")?.parse()?;
    let mut o = Opts {
        addr,
        mode,
        conns,
        secs,
        close: false,
        auth: String::new(),
        think: Duration::ZERO,
        path: "/v1/credentials/default".into(),
    };
    while let Ok(flag) = next("flag") {
        match flag.as_str() {
            "--close" => o.close = true,
            "--auth" => o.auth = next("--auth value")?,
            "--path" => o.path = next("--path value")?,
            "--think-ms" => o.think = Duration::from_millis(next("--think-ms value")?.parse()?),
            f => return Err(format!("unknown flag {f:?}").into()),
        }
    }
    Ok(o)
}

/// One HTTP/1.1 client connection with a reusable read buffer; reconnects
/// when the server closed it (HTTP/1.0, `Connection: close`).
struct Conn {
    addr: String,
    s: Option<TcpStream>,
    buf: Vec<u8>,
}

/// A request without an answer in this time is an error (and its connection dropped).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Conn {
    fn new(addr: &str) -> Conn {
        Conn {
            addr: addr.to_owned(),
            s: None,
            buf: Vec::with_capacity(8192),
        }
    }

    async fn call(&mut self, req: &[u8]) -> Result<Answer, Error> {
        let r = match tokio::time::timeout(CALL_TIMEOUT, self.call_inner(req)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {CALL_TIMEOUT:?}").into()),
        };
        if r.is_err() {
            self.s = None;
        }
        r
    }

    async fn call_inner(&mut self, req: &[u8]) -> Result<Answer, Error> {
        if self.s.is_none() {
            let s = TcpStream::connect(&self.addr).await?;
            s.set_nodelay(true)?;
            self.s = Some(s);
        }
        let s = self.s.as_mut().ok_or("no connection")?;
        s.write_all(req).await?;
        self.buf.clear();
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Err("connection closed before a full response head".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let head = std::str::from_utf8(&self.buf[..head_end])?;
        let status = head
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .ok_or("bad status line")?;
        let mut len = None;
        // HTTP/1.0 (the Python peer) closes after every answer unless told otherwise.
        let mut closed = head.starts_with("HTTP/1.0");
        for line in head.split("\r\n").skip(1) {
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = Some(v.trim().parse::<usize>()?);
                } else if k.eq_ignore_ascii_case("connection") {
                    closed = v.trim().eq_ignore_ascii_case("close");
                }
            }
        }
        let len = len.ok_or("no content-length")?;
        while self.buf.len() < head_end + len {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Err("connection closed inside the body".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        let body = self.buf[head_end..head_end + len].to_vec();
        if closed {
            self.s = None;
        }
        Ok(Answer { status, body })
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn json_str<'a>(body: &'a str, key: &str) -> Option<&'a str> {
    let at = body.find(&format!("\"{key}\""))? + key.len() + 2;
    let rest = body[at..].trim_start().strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    rest.find('"').map(|e| &rest[..e])
}

#[derive(Default)]
struct Tally {
    lat_us: Vec<u32>,
    requests: u64,
    errors: u64,
    samples_err: Vec<String>,
    keys: BTreeSet<String>,
}

impl Tally {
    fn err(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.samples_err.len() < 5 {
            self.samples_err.push(e.to_string());
        }
    }
}

struct Reqs {
    ecs: Vec<u8>,
    token: Vec<u8>,
    list_prefix: String,
    conn_hdr: &'static str,
    host: String,
}

impl Reqs {
    fn new(o: &Opts) -> Reqs {
        let conn_hdr = if o.close { "close" } else { "keep-alive" };
        let host = o.addr.clone();
        Reqs {
            ecs: format!(
                "GET {} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {}\r\nConnection: {conn_hdr}\r\n\r\n",
                o.path, o.auth
            )
            .into_bytes(),
            token: format!(
                "PUT /latest/api/token HTTP/1.1\r\nHost: {host}\r\nX-aws-ec2-metadata-token-ttl-seconds: 21600\r\nContent-Length: 0\r\nConnection: {conn_hdr}\r\n\r\n"
            )
            .into_bytes(),
            list_prefix: "/latest/meta-data/iam/security-credentials/".into(),
            conn_hdr,
            host,
        }
    }

    fn get(&self, path: &str, token: &str) -> Vec<u8> {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nX-aws-ec2-metadata-token: {token}\r\nConnection: {}\r\n\r\n",
            self.host, self.conn_hdr
        )
        .into_bytes()
    }
}

/// The three-request IMDSv2 sequence on one connection → the credentials body.
async fn imds_sequence(c: &mut Conn, r: &Reqs, t: &mut Tally) -> Result<Vec<u8>, Error> {
    let tok = c.call(&r.token).await?;
    t.requests += 1;
    if tok.status != 200 {
        return Err(format!("token PUT answered {}", tok.status).into());
    }
    let token = String::from_utf8(tok.body)?;
    let list = c.call(&r.get(&r.list_prefix, &token)).await?;
    t.requests += 1;
    if list.status != 200 {
        return Err(format!("role list answered {}", list.status).into());
    }
    let role = String::from_utf8(list.body)?;
    let creds = c
        .call(&r.get(&format!("{}{role}", r.list_prefix), &token))
        .await?;
    t.requests += 1;
    if creds.status != 200 {
        return Err(format!("role GET answered {}", creds.status).into());
    }
    Ok(creds.body)
}

/// Mixed mode: is the body fresh credentials? Records the key.
fn check_fresh(body: &[u8], t: &mut Tally) -> Result<(), Error> {
    let text = std::str::from_utf8(body)?;
    let exp = json_str(text, "Expiration").ok_or("no Expiration")?;
    let exp = humantime::parse_rfc3339(exp)?;
    if exp <= SystemTime::now() {
        return Err(format!("expired credentials served ({exp:?})").into());
    }
    let key = json_str(text, "AccessKeyId").ok_or("no AccessKeyId")?;
    if json_str(text, "SecretAccessKey").is_none_or(str::is_empty) {
        return Err("no SecretAccessKey".into());
    }
    t.keys.insert(key.to_owned());
    Ok(())
}

async fn one_sample(
    c: &mut Conn,
    o: &Opts,
    r: &Reqs,
    imds: bool,
    t: &mut Tally,
) -> Result<(), Error> {
    let body = if imds {
        imds_sequence(c, r, t).await?
    } else {
        let a = c.call(&r.ecs).await?;
        t.requests += 1;
        if a.status != 200 {
            return Err(format!("ECS GET answered {}", a.status).into());
        }
        a.body
    };
    if o.mode == Mode::Mixed {
        check_fresh(&body, t)?;
    }
    if o.close {
        c.s = None;
    }
    Ok(())
}

async fn client(i: usize, o: Arc<Opts>, stop: Arc<AtomicBool>) -> Tally {
    let r = Reqs::new(&o);
    let mut t = Tally::default();
    let imds = match o.mode {
        Mode::Imds => true,
        Mode::Mixed => i.is_multiple_of(2),
        _ => false,
    };
    let mut conn = Conn::new(&o.addr);
    if o.mode == Mode::Hold {
        if let Err(e) = one_sample(&mut conn, &o, &r, false, &mut t).await {
            t.err(e);
        }
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        return t;
    }
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        match one_sample(&mut conn, &o, &r, imds, &mut t).await {
            Ok(()) => t
                .lat_us
                .push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32),
            Err(e) => {
                t.err(e);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        if !o.think.is_zero() {
            tokio::time::sleep(o.think).await;
        }
    }
    t
}

fn pct(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

async fn run(o: Opts) -> Result<serde_json::Value, Error> {
    let o = Arc::new(o);
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..o.conns)
        .map(|i| tokio::spawn(client(i, o.clone(), stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(o.secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Tally::default();
    for task in tasks {
        let t = task.await?;
        all.lat_us.extend(t.lat_us);
        all.requests += t.requests;
        all.errors += t.errors;
        for e in t.samples_err {
            if all.samples_err.len() < 10 {
                all.samples_err.push(e);
            }
        }
        all.keys.extend(t.keys);
    }
    let secs = t0.elapsed().as_secs_f64();
    all.lat_us.sort_unstable();
    let n = all.lat_us.len();
    Ok(serde_json::json!({
        "samples": n, "requests": all.requests, "errors": all.errors,
        "error_samples": all.samples_err, "secs": secs, "per_s": n as f64 / secs,
        "p50_us": pct(&all.lat_us, 0.5), "p99_us": pct(&all.lat_us, 0.99),
        "p999_us": pct(&all.lat_us, 0.999), "keys": all.keys.len(),
    }))
}

fn main() -> std::process::ExitCode {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!(
                "bench_load: {e}\nusage: bench_load ADDR ecs|imds|mixed|hold CONNS SECS [--close] [--auth T] [--think-ms N]"
            );
            return std::process::ExitCode::from(64);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench_load: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match rt.block_on(run(o)) {
        Ok(v) => {
            println!("{v}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench_load: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
