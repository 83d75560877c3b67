"""Turn bench/bench.py's JSON into docs/benchmarks.md and the plot.

Usage: report.py RESULTS.json OUT.md OUT.png COMMAND
Runs in the bench venv (.cache/bench/peer-venv, which holds matplotlib).
Hand-written paragraphs on what limits each unmet target live in
bench/notes.md and are appended verbatim (they quote profiles and reasons a
program cannot derive).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SERVERS = ("credbroker", "baseline", "peer")


def mb(kb: float) -> str:
    return f"{kb / 1024:.1f} MB"


def table(head: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def targets(r: dict) -> list[list]:
    t = {(x["scenario"], x["concurrency"]): x for x in r["throughput"]}
    fp, st = r["footprint"], r["startup"]
    fc = {x["route"]: x["median_ms"] for x in r["first_credential"]}
    amp = [a for a in r["amplification"] if a["connections"] == "one per request"][0]
    amp_ka = [a for a in r["amplification"] if a["connections"] == "keep-alive"][0]
    rows = []

    def add(name: str, value: str, ok: bool) -> None:
        rows.append([name, value, "met" if ok else "**not met**"])

    for c in (16, 128):
        x = t[("ecs keep-alive", c)]
        add(f"ECS GET keep-alive ≥ 0.9× baseline at {c}", f"{x['ratio_vs_baseline']:.2f}×", x["ratio_vs_baseline"] >= 0.9)
    for c in (16, 128):
        x = t[("ecs one connection per request", c)]
        add(f"ECS GET one connection per request ≥ 0.8× baseline at {c}", f"{x['ratio_vs_baseline']:.2f}×",
            x["ratio_vs_baseline"] >= 0.8)
    for c in (16, 128):
        x = t[("imds sequence keep-alive", c)]
        add(f"IMDSv2 sequence ≥ 0.8× baseline at {c}", f"{x['ratio_vs_baseline']:.2f}×", x["ratio_vs_baseline"] >= 0.8)
    x = t[("ecs keep-alive", 16)]
    add("p99 < 1 ms at 16 connections (ECS keep-alive)", f"{x['credbroker']['p99_us'] / 1000:.2f} ms",
        x["credbroker"]["p99_us"] < 1000)
    worst_peer = min(x["ratio_vs_peer"] for x in r["throughput"])
    add("≥ 10× the Python peer (every scenario and concurrency)", f"{worst_peer:.1f}× (worst cell)", worst_peer >= 10)
    add("exactly one upstream exchange per refresh cycle, 1,000 clients",
        f"{amp['sts_exchanges']} STS + {amp['idp_refreshes']} IdP over {amp['expected_cycles']} cycles",
        amp["sts_exchanges"] == amp["expected_cycles"] and amp["idp_refreshes"] == amp["expected_cycles"])
    add("0 client errors, 1,000 clients (one connection per request)", str(amp["client_errors"]), amp["client_errors"] == 0)
    add("0 client errors, 1,000 keep-alive connections", str(amp_ka["client_errors"]), amp_ka["client_errors"] == 0)
    add("idle RSS ≤ 10 MB", mb(fp["rss_idle_kb"]), fp["rss_idle_kb"] <= 10 * 1024)
    add("RSS ≤ 32 MB with 1,000 open connections", mb(fp["rss_with_connections_kb"]),
        fp["rss_with_connections_kb"] <= 32 * 1024)
    per_min = fp["idle_voluntary_switches"] * 60 / fp["idle_window_s"]
    add("no idle wake-ups besides refreshes and the clock re-check (≤ 30 s sleeps: ~2/min per task)",
        f"{fp['idle_voluntary_switches']} voluntary switches in {fp['idle_window_s']} s, "
        f"{fp['idle_cpu_ms']:.0f} ms CPU"
        + (f", {fp['idle_refreshes']} scheduled refresh(es) in the window" if "idle_refreshes" in fp else ""),
        per_min <= 10)
    add("ready ≤ 50 ms after the upstream answers", f"{st['ready_after_upstream_ms']:.1f} ms",
        st["ready_after_upstream_ms"] <= 50)
    add("stripped binary ≤ 12 MB", f"{fp['stripped_binary_bytes'] / 1e6:.1f} MB", fp["stripped_binary_bytes"] <= 12e6)
    for sdk, rt in (("boto3", "boto3"), ("Rust", "Rust aws-config")):
        cog = fc[f"{sdk} in-process Cognito (GetId + GetCredentialsForIdentity at moto)"]
        ecs = fc[f"{rt} via credbroker ECS"]
        add(f"{sdk}: fresh process via credbroker (ECS) below in-process Cognito",
            f"{ecs:.0f} ms vs {cog:.0f} ms", ecs < cog)
    return rows


def plot(r: dict, path: Path) -> None:
    scen = ("ecs keep-alive", "ecs one connection per request", "imds sequence keep-alive")
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), constrained_layout=True)
    for j, s in enumerate(scen):
        rows = [x for x in r["throughput"] if x["scenario"] == s]
        cs = [x["concurrency"] for x in rows]
        for n in SERVERS:
            axes[0][j].plot(cs, [x[n]["per_s"] for x in rows], marker="o", label=n)
            axes[1][j].plot(cs, [x[n]["p99_us"] / 1000 for x in rows], marker="o", label=n)
        unit = "sequences/s" if "imds" in s else "requests/s"
        axes[0][j].set(title=s, xscale="log", yscale="log", ylabel=unit, xticks=cs, xticklabels=cs)
        axes[1][j].set(xscale="log", yscale="log", ylabel="p99 ms", xlabel="concurrent connections", xticks=cs,
                       xticklabels=cs)
        axes[0][j].legend()
    fig.suptitle(f"credbroker vs bare hyper baseline vs aws-export-credentials — {r['machine']['date_utc']}, "
                 f"{r['machine']['cpus']} vCPUs")
    fig.savefig(path, dpi=90)


def main() -> int:
    res_path, md_path, png_path, command = sys.argv[1:5]
    r = json.loads(Path(res_path).read_text())
    m, fp, st = r["machine"], r["footprint"], r["startup"]
    notes = Path(__file__).with_name("notes.md")
    md = [
        "# Benchmarks",
        "",
        f"Written by `{command}` (bench/bench.py, bench/report.py) on {m['date_utc']}; rerun it to refresh. "
        f"Quick smoke run of the same code: `bench/run.sh --quick` (part of `tests/run.sh`).",
        "",
        f"**Machine:** {m['cpus']} vCPUs ({m['cpu']}), Linux {m['kernel']}, loopback only. "
        f"Load average before/after: {', '.join(f'{x:.2f}' for x in m['load_before'])} / "
        f"{', '.join(f'{x:.2f}' for x in m['load_after'])}"
        + (" (the VM's two cores were **shared with other builds** during the run)" if m["load_before"][0] > 3 else
           " (nothing else ran)")
        + ". Every load generator runs on the same two cores as the server it drives: absolute figures are "
        "noisy, only the side-by-side ratios (median of per-slice ratios) are meant to be compared.",
        "",
        "Servers: **credbroker** (release build, `RUST_LOG=info`, Cognito flow against moto + oidc-provider, "
        "credentials already fresh); **baseline** — `examples/bench_baseline.rs`, a bare hyper 1 server on the same "
        "tokio multi-thread runtime answering credbroker's captured bytes from memory with no checks (the "
        "practical loopback limit); **peer** — aws-export-credentials 0.18.0 (boto3 1.36) in `--container` and "
        "`--imds` modes, sourcing its session from credbroker's ECS endpoint.",
        "",
        "## Targets",
        "",
        table(["target", "measured", ""], targets(r)),
        "",
    ]
    md += ["## Throughput and latency", "",
           f"ECS GET driven by **{r['throughput'][0]['tool']}** (`-z {r['throughput'][0]['slice_s']}s -c N`, "
           "`--disable-keepalive` for one connection per request). The IMDSv2 sequence (PUT token, GET role list, "
           "GET role; one sample = all three on one keep-alive connection, a fresh token each time, as an SDK "
           "fetch does) is driven by `examples/bench_load.rs`, because oha does one URL per run and the second and "
           "third requests depend on the first's answer; that generator uses raw pre-rendered HTTP/1.1 over tokio "
           "and drives every server the same way. Servers run in alternating slices (credbroker, baseline, peer, "
           f"peer, baseline, credbroker, …; {r['throughput'][0]['rounds']} rounds); rates and latencies are the "
           "median over slices, ratios the median of per-round ratios.", ""]
    rows = []
    for x in r["throughput"]:
        for n in SERVERS:
            y = x[n]
            rows.append([x["scenario"], x["concurrency"], n, f"{y['per_s']:,.0f}", f"{y['p50_us']:.0f}",
                         f"{y['p99_us']:.0f}", f"{y['p999_us']:.0f}", y["errors"],
                         f"{x['ratio_vs_baseline']:.2f}" if n == "credbroker" else "",
                         f"{x['ratio_vs_peer']:.1f}" if n == "credbroker" else ""])
    md += [table(["scenario", "conns", "server", "per s", "p50 µs", "p99 µs", "p99.9 µs", "errors",
                  "cb/baseline", "cb/peer"], rows), "", "![throughput and p99](benchmarks.png)", ""]
    md += ["## Time to first credential (fresh process)", "",
           f"Each route started as a new process {r['first_credential'][0]['n']} times, routes interleaved; wall "
           "time from spawn to exit, interpreter/runtime start included (the same for every route of one SDK). "
           "The in-process Cognito routes get a ready id_token (they would also need an IdP refresh grant in "
           "real life, so they are measured favourably). The Rust SDK's `credential_process` route is not "
           "measured: this crate builds aws-config without its `credentials-process` feature.", "",
           table(["route", "median ms", "p99 ms", "min ms"],
                 [[x["route"], f"{x['median_ms']:.1f}", f"{x['p99_ms']:.1f}", f"{x['min_ms']:.1f}"]
                  for x in r["first_credential"]]), ""]
    p = r["parallel_credential_process"]
    md += [f"**50 parallel `credbroker credential-process`** ({p['runs']} runs): median wall {p['median_wall_ms']:.0f} ms, "
           f"worst {p['max_wall_ms']:.0f} ms, upstream calls (moto requests + IdP refresh grants) {p['upstream_calls']}.", ""]
    md += ["## Upstream amplification", "",
           "A second daemon on the STS flow with short credentials (refresh at half-life) and 20 s id_tokens "
           "(so every refresh needs an IdP refresh grant too). Clients alternate ECS GET and the IMDSv2 "
           "sequence with 10 ms pauses and check every answer (200, unexpired `Expiration`, a secret). STS "
           "exchanges counted by moto's recorder, IdP refresh grants by oidc-provider's counters.", "",
           table(["clients", "connections", "lifetime s", "load s", "refresh cycles", "STS exchanges",
                  "IdP refreshes", "requests", "client errors", "keys served", "first errors"],
                 [[a["clients"], a["connections"], a["credential_lifetime_s"], a["load_s"], a["expected_cycles"],
                   a["sts_exchanges"], a["idp_refreshes"], f"{a['requests']:,}", a["client_errors"],
                   a["distinct_keys"], "; ".join(a["error_samples"])[:160]] for a in r["amplification"]]), ""]
    cl = r.get("caller_lookup")
    if cl:
        lk = cl["lookup"]
        md += ["## Knowing the caller: uid lookup and audit trail", "",
               f"One `sock_diag` lookup of a live loopback connection (`examples/bench_lookup.rs`, "
               f"{lk['lookups']:,} lookups in batches of 1,000): median **{lk['median_us']:.1f} µs** per lookup "
               f"(batches {lk['min_us']:.1f}–{lk['max_us']:.1f} µs). The server does it once per connection, "
               "when a uid check or the audit trail first needs it. Three daemons side by side (16 connections, "
               "alternating slices): the default (`allowed_uids = [\"self\"]`: a lookup per connection), "
               "`[\"any\"]` (no lookup), and the default plus `audit.log` to a file (the client's process "
               "found in `/proc` before a connection's first answer, events written by a thread of their own). "
               f"Audit events written: {cl['audit_events']:,} ({cl['audit_events_with_pid']:,} naming a pid).", "",
               table(["scenario", "self per s", "any per s", "self+audit per s", "self/any", "self+audit/any",
                      "errors"],
                     [[x["scenario"], f"{x['credbroker']['per_s']:,.0f}", f"{x['credbroker-any']['per_s']:,.0f}",
                       f"{x['credbroker-audit']['per_s']:,.0f}", f"{x['ratio_credbroker_vs_any']:.2f}",
                       f"{x['ratio_credbroker-audit_vs_any']:.2f}",
                       sum(x[n]["errors"] for n in ("credbroker", "credbroker-any", "credbroker-audit"))]
                      for x in cl["rows"]]), ""]
    md += ["## Footprint", "",
           table(["figure", "value"], [
               ["RSS idle", mb(fp["rss_idle_kb"])],
               [f"RSS with {fp['open_connections_tried']} connections opened (fds held by the daemon: "
                f"{fp['daemon_fds_while_held']}; client errors {fp['hold_errors']})", mb(fp["rss_with_connections_kb"])],
               ["RSS after the load runs (peak)", f"{mb(fp['rss_after_load_kb'])} ({mb(fp['rss_peak_kb'])})"],
               ["threads", fp["threads"]],
               [f"idle CPU over {fp['idle_window_s']} s", f"{fp['idle_cpu_ms']:.0f} ms"],
               [f"idle voluntary / involuntary context switches over {fp['idle_window_s']} s (all threads)",
                f"{fp['idle_voluntary_switches']} / {fp['idle_nonvoluntary_switches']}"],
               ["release binary, stripped", f"{fp['stripped_binary_bytes'] / 1e6:.2f} MB"],
               [f"start → `listening` log line (median of {st['runs']})", f"{st['listening_ms']:.0f} ms"],
               ["start → `/readyz` 200 (first credentials served)", f"{st['ready_ms']:.0f} ms"],
               ["of which upstream (first request in → last answer out, at a proxy)", f"{st['upstream_ms']:.0f} ms"],
               ["last upstream answer → `/readyz` 200", f"{st['ready_after_upstream_ms']:.1f} ms"],
           ]), ""]
    if r.get("profile"):
        md += ["## Profile (perf, credbroker under ECS keep-alive load, 16 connections)", "", "```",
               *[" ".join(l.split()[:-2] if l.rstrip().endswith("-") else l.split()) for l in r["profile"]],
               "```", ""]
    if notes.exists():
        md += [notes.read_text()]
    Path(md_path).write_text("\n".join(md).rstrip() + "\n")
    plot(r, Path(png_path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
