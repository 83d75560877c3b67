//! The cost of one `sock_diag` caller lookup (`credbroker::peer::lookup`),
//! as the server pays it once per connection: a live loopback connection is
//! looked up `N` times (default 20,000) in batches of 1,000; prints
//! `{"lookups": N, "median_us": …, "min_us": …, "max_us": …}` over the
//! batches' per-lookup means. Used by bench/bench.py.

use std::time::Instant;

fn main() -> std::io::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let local = l.local_addr()?;
    let _client = std::net::TcpStream::connect(local)?;
    let (_server, peer) = l.accept()?;
    match credbroker::peer::lookup(local, peer)? {
        Some(c) if c.inode > 0 => {}
        other => {
            eprintln!("the kernel does not know our own connection: {other:?}");
            std::process::exit(1);
        }
    }
    let batch = 1000.min(n.max(1));
    let mut means = Vec::new();
    for _ in 0..n.div_ceil(batch) {
        let t = Instant::now();
        for _ in 0..batch {
            credbroker::peer::lookup(local, peer)?;
        }
        means.push(t.elapsed().as_secs_f64() * 1e6 / batch as f64);
    }
    means.sort_by(f64::total_cmp);
    let median = means[means.len() / 2];
    println!(
        "{{\"lookups\": {}, \"median_us\": {median:.2}, \"min_us\": {:.2}, \"max_us\": {:.2}}}",
        means.len() * batch,
        means[0],
        means[means.len() - 1]
    );
    Ok(())
}
