"""credbroker benchmark driver (issue 13); run through bench/run.sh.

Starts moto + oidc-provider + credbroker with the e2e harness
(tests/e2e/harness.py), the bare baseline (examples/bench_baseline.rs) and
the peer aws-export-credentials (--imds, --container), measures every figure
and prints one JSON document; in full mode also writes docs/benchmarks.md and
docs/benchmarks.png. Every figure that cannot be produced raises: the quick
mode (tests/run.sh) fails loudly instead of rotting.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))
import harness as h  # noqa: E402

CONCURRENCY = (1, 16, 128)


class BenchError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    def up() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return True
        except OSError:
            return False
    h.wait_for(up, timeout, f"port {port}", interval=0.1)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(p * len(s) + 0.5)) - 1))]


class Bench:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        self.quick = a.quick
        self.bins = Path(a.bin_dir).resolve()
        self.examples = self.bins / "examples"
        self.res: dict[str, Any] = {"mode": "quick" if a.quick else "full"}
        self.procs: list[subprocess.Popen] = []

    # -- servers ---------------------------------------------------------------
    def start(self) -> None:
        self.moto = h.Moto().start()
        self.idp = h.OidcProvider(id_ttl=300).start()
        pool = self.moto.create_oidc_identity_pool(self.idp.issuer)
        self.pool = pool
        cfg = h.make_config(login=h.oidc_login(self.idp), aws={"flow": "cognito", "identity_pool_id": pool})
        self.d = h.Daemon(config=cfg, moto_url=self.moto.url, binary=self.bins / "credbroker")
        self.d.write_refresh_token(self.idp.mint())
        self.d.start()
        self.token = self.d.ecs_token()
        ecs = self.d.ecs_creds_response("default")
        tok = self.d.imds_token()
        hdr = {h.IMDS_TOKEN_HEADER: tok}
        base = "/latest/meta-data/iam/security-credentials/"
        role = self.d.get(base, hdr)
        imds = self.d.get(base + role.text, hdr)
        for r in (ecs, role, imds):
            if r.status != 200:
                raise BenchError(f"credbroker answered {r}")
        bdir = h.scratch_dir("baseline-")
        (bdir / "ecs.json").write_bytes(ecs.body)
        (bdir / "imds.json").write_bytes(imds.body)
        (bdir / "role.txt").write_bytes(role.body)
        (bdir / "token.txt").write_text(tok)
        log = open(bdir / "baseline.log", "wb")
        p = subprocess.Popen([str(self.examples / "bench_baseline"), str(bdir)], stdout=subprocess.PIPE,
                             stderr=log, env=h.clean_env())
        self.procs.append(p)
        line = p.stdout.readline().decode()
        if not line.startswith("baseline addr="):
            raise BenchError(f"baseline did not start: {line!r}")
        self.base_addr = line.split("=", 1)[1].strip()
        # The peer sources its session from credbroker's ECS endpoint (fresh,
        # with an expiry) and calls STS GetCallerIdentity at moto for its role name.
        peer = Path(self.a.peer_venv) / "bin" / "aws-export-credentials"
        if not peer.exists():
            raise BenchError(f"{peer} not found (bench/run.sh installs it)")
        penv = self.d.sdk_env("ecs", AWS_ENDPOINT_URL=self.moto.url)
        self.peer_imds_port, self.peer_ecs_port = free_port(), free_port()
        self.peer_token = "benchpeertoken"
        for args in (["--imds", f"127.0.0.1:{self.peer_imds_port}"],
                     ["--container", f"127.0.0.1:{self.peer_ecs_port}", self.peer_token]):
            self.procs.append(subprocess.Popen([str(peer), *args], env=penv, stdout=subprocess.DEVNULL,
                                               stderr=open(bdir / f"peer{args[0]}.log", "wb")))
        wait_port(self.peer_imds_port)
        wait_port(self.peer_ecs_port)
        self.servers = {
            "credbroker": {"addr": self.d.addr, "auth": self.token, "path": "/v1/credentials/default"},
            "baseline": {"addr": self.base_addr, "auth": self.token, "path": "/v1/credentials/default"},
            "peer": {"addr": f"127.0.0.1:{self.peer_ecs_port}", "imds_addr": f"127.0.0.1:{self.peer_imds_port}",
                     "auth": self.peer_token, "path": "/"},
        }
        for name in self.servers:  # every server answers both routes before we time anything
            for kind in ("ecs", "imds"):
                r = self.load(name, kind, 1, 0.3)
                if r["errors"] or not r["samples"]:
                    raise BenchError(f"{name} {kind} smoke run failed: {r}")

    def stop(self) -> None:
        for p in self.procs:
            h.stop_process(p)
        for x in ("d", "moto", "idp"):
            if hasattr(self, x):
                getattr(self, x).terminate()

    # -- load ------------------------------------------------------------------
    def load(self, name: str, kind: str, conns: int, secs: float, close: bool = False,
             tool: str = "bench_load") -> dict[str, Any]:
        s = self.servers[name]
        addr = s.get("imds_addr", s["addr"]) if kind == "imds" else s["addr"]
        if tool == "oha":
            argv = [self.a.oha, "-z", f"{secs}s", "-c", str(conns), "--no-tui", "--output-format", "json",
                    "-H", f"Authorization: {s['auth']}", f"http://{addr}{s['path']}"]
            if close:
                argv.insert(1, "--disable-keepalive")
            out = subprocess.run(argv, capture_output=True, text=True, env=h.clean_env(), timeout=secs + 60)
            if out.returncode != 0:
                raise BenchError(f"oha failed: {out.stderr[-2000:]}")
            j = json.loads(out.stdout)
            codes = j.get("statusCodeDistribution", {})
            ok = int(codes.get("200", 0))
            # "aborted due to deadline": requests in flight when -z ran out, not server errors.
            errs = sum(int(v) for c, v in codes.items() if c != "200") + sum(
                int(v) for k, v in (j.get("errorDistribution") or {}).items() if "deadline" not in k)
            lp = {k: (v or 0.0) for k, v in j["latencyPercentiles"].items()}
            return {"samples": ok, "requests": ok + errs, "errors": errs, "per_s": ok / j["summary"]["total"],
                    "p50_us": lp["p50"] * 1e6, "p99_us": lp["p99"] * 1e6, "p999_us": lp["p99.9"] * 1e6}
        argv = [str(self.examples / "bench_load"), addr, kind, str(conns), str(secs),
                "--auth", s["auth"], "--path", s["path"]]
        if close:
            argv.append("--close")
        out = subprocess.run(argv, capture_output=True, text=True, env=h.clean_env(), timeout=secs + 120)
        if out.returncode != 0:
            raise BenchError(f"bench_load {argv[1:]} failed: {out.stderr[-2000:]}")
        return json.loads(out.stdout)

    def throughput(self) -> None:
        rounds, secs = (2, 0.5) if self.quick else (self.a.rounds, self.a.slice)
        ecs_tool = "bench_load" if self.quick or not self.a.oha else "oha"
        scen = [("ecs keep-alive", "ecs", False, ecs_tool), ("ecs one connection per request", "ecs", True, ecs_tool),
                ("imds sequence keep-alive", "imds", False, "bench_load")]
        names = list(self.servers)
        out = []
        for label, kind, close, tool in scen:
            for c in CONCURRENCY:
                per: dict[str, list[dict]] = {n: [] for n in names}
                for r in range(rounds):
                    order = names if r % 2 == 0 else names[::-1]  # A B C C B A …
                    for n in order:
                        per[n].append(self.load(n, kind, c, secs, close, tool))
                row: dict[str, Any] = {"scenario": label, "tool": tool, "concurrency": c, "rounds": rounds,
                                       "slice_s": secs}
                for n in names:
                    rs = per[n]
                    row[n] = {"per_s": statistics.median(x["per_s"] for x in rs),
                              "p50_us": statistics.median(x["p50_us"] for x in rs),
                              "p99_us": statistics.median(x["p99_us"] for x in rs),
                              "p999_us": statistics.median(x["p999_us"] for x in rs),
                              "errors": sum(x["errors"] for x in rs),
                              "samples": sum(x["samples"] for x in rs)}
                    if not row[n]["samples"]:
                        raise BenchError(f"{label} c={c}: {n} produced no samples")
                for other in ("baseline", "peer"):
                    ratios = [a["per_s"] / b["per_s"] for a, b in zip(per["credbroker"], per[other]) if b["per_s"]]
                    row[f"ratio_vs_{other}"] = statistics.median(ratios)
                out.append(row)
                print(f"  {label:32} c={c:<4} cb {row['credbroker']['per_s']:9.0f}/s  base "
                      f"{row['baseline']['per_s']:9.0f}/s  peer {row['peer']['per_s']:7.0f}/s  "
                      f"cb/base {row['ratio_vs_baseline']:.2f}  cb/peer {row['ratio_vs_peer']:.1f}  "
                      f"cb p99 {row['credbroker']['p99_us']:.0f} us", flush=True)
        self.res["throughput"] = out

    # -- time to first credential ---------------------------------------------
    def first_credential(self) -> None:
        n = 3 if self.quick else self.a.processes
        grant = self.idp.mint_grant()
        status, body = self.idp.refresh(grant["refresh_token"])
        if status != 200 or "id_token" not in body:
            raise BenchError(f"cannot get an id_token for the in-process route: {status}")
        id_token = body["id_token"]
        py = str(h.VENV_BIN / "python")
        cfgdir = h.scratch_dir("cp-")
        awsconf = cfgdir / "config"
        awsconf.write_text(f"[default]\ncredential_process = {self.bins / 'credbroker'} credential-process "
                           f"-c {self.d.config_path}\n")
        denv = {k: self.d.env[k] for k in ("XDG_RUNTIME_DIR", "XDG_STATE_HOME", "XDG_CONFIG_HOME")}
        boto = ("import botocore.session as s; c = s.get_session().get_credentials(); "
                "print(c.get_frozen_credentials().access_key)")
        boto_cognito = (
            "import botocore.session, os; from botocore import UNSIGNED; from botocore.config import Config; "
            "c = botocore.session.get_session().create_client('cognito-identity', endpoint_url=os.environ['COGNITO_ENDPOINT'], "
            "config=Config(signature_version=UNSIGNED)); l = {os.environ['LOGIN_PROVIDER']: os.environ['ID_TOKEN']}; "
            "i = c.get_id(IdentityPoolId=os.environ['IDENTITY_POOL_ID'], Logins=l)['IdentityId']; "
            "print(c.get_credentials_for_identity(IdentityId=i, Logins=l)['Credentials']['AccessKeyId'])")
        cog = {"COGNITO_ENDPOINT": self.moto.url, "LOGIN_PROVIDER": self.idp.login_provider, "ID_TOKEN": id_token,
               "IDENTITY_POOL_ID": self.pool, "AWS_EC2_METADATA_DISABLED": "true"}
        fc = str(self.examples / "bench_first_cred")
        routes = {
            "boto3 via credbroker ECS": ([py, "-c", boto], self.d.sdk_env("ecs")),
            "boto3 via credbroker IMDS": ([py, "-c", boto], self.d.sdk_env("imds")),
            "boto3 credential_process = credbroker credential-process":
                ([py, "-c", boto], h.clean_env(AWS_CONFIG_FILE=awsconf, AWS_EC2_METADATA_DISABLED="true", **denv)),
            "boto3 in-process Cognito (GetId + GetCredentialsForIdentity at moto)": ([py, "-c", boto_cognito], h.clean_env(**cog)),
            "Rust aws-config via credbroker ECS": ([fc, "ecs"], self.d.sdk_env("ecs")),
            "Rust aws-config via credbroker IMDS": ([fc, "imds"], self.d.sdk_env("imds")),
            "Rust in-process Cognito (GetId + GetCredentialsForIdentity at moto)": ([fc, "cognito"], h.clean_env(**cog)),
            "credbroker credential-process alone": ([str(self.bins / "credbroker"), "credential-process", "-c",
                                                     str(self.d.config_path)], h.clean_env(**denv)),
        }
        times: dict[str, list[float]] = {k: [] for k in routes}
        for _ in range(n):
            for k, (argv, env) in routes.items():  # interleaved: drift hits every route alike
                t0 = time.perf_counter()
                p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
                dt = (time.perf_counter() - t0) * 1000
                if p.returncode != 0 or not p.stdout.strip():
                    raise BenchError(f"{k}: exit {p.returncode}\n{p.stdout[-500:]}\n{p.stderr[-1500:]}")
                times[k].append(dt)
        self.res["first_credential"] = [{"route": k, "n": len(v), "median_ms": statistics.median(v),
                                         "p99_ms": pct(v, 0.99), "min_ms": min(v)} for k, v in times.items()]
        for r in self.res["first_credential"]:
            print(f"  {r['route']:72} median {r['median_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms", flush=True)
        # 50 parallel credential_process invocations.
        argv, env = routes["credbroker credential-process alone"]
        walls, upstream = [], []
        for _ in range(1 if self.quick else 5):
            self.moto.start_recording()
            before = self.idp.stats()["refresh_grants"]
            t0 = time.perf_counter()
            ps = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(50)]
            outs = [p.communicate(timeout=60) for p in ps]
            walls.append((time.perf_counter() - t0) * 1000)
            bad = [o for p, o in zip(ps, outs) if p.returncode != 0 or b"AccessKeyId" not in o[0]]
            if bad:
                raise BenchError(f"{len(bad)} of 50 credential-process runs failed: {bad[0][1][-500:]!r}")
            upstream.append(len(self.moto.download_recording()) + self.idp.stats()["refresh_grants"] - before)
            self.moto.stop_recording()
        self.res["parallel_credential_process"] = {"n": 50, "runs": len(walls), "median_wall_ms": statistics.median(walls),
                                                   "max_wall_ms": max(walls), "upstream_calls": sum(upstream)}
        print(f"  50 parallel credential-process: {self.res['parallel_credential_process']}", flush=True)

    # -- upstream amplification -----------------------------------------------
    def amplification(self) -> None:
        # Credentials are served while more than 15 s are left (SERVE_MARGIN) and
        # refreshed at half-life: 40 s ones are refreshed every ~18-20 s.
        clients, cycles, dur = (100, 0, 40) if self.quick else (1000, 5, 40)
        idp = h.OidcProvider(id_ttl=20).start()
        try:
            cfg = h.make_config(login=h.oidc_login(idp), aws={"flow": "sts", "role_arn": h.OIDC_ROLE_ARN,
                                                            "session_name": h.SESSION_NAME, "duration": f"{dur}s"})
            d = h.Daemon(config=cfg, moto_url=self.moto.url, binary=self.bins / "credbroker")
            d.write_refresh_token(idp.mint())
            d.start()
            try:
                out = []
                for close in (True, False):
                    n_cycles = cycles if close or not cycles else 1
                    self.moto.start_recording()
                    idp0 = idp.stats()["refresh_grants"]
                    secs = n_cycles * dur / 2 + 3
                    argv = [str(self.examples / "bench_load"), d.addr, "mixed", str(clients), str(secs),
                            "--auth", d.ecs_token(), "--think-ms", "10"] + (["--close"] if close else [])
                    p = subprocess.run(argv, capture_output=True, text=True, env=h.clean_env(), timeout=secs + 120)
                    if p.returncode != 0:
                        raise BenchError(f"bench_load mixed failed: {p.stderr[-2000:]}")
                    r = json.loads(p.stdout)
                    sts = sum(1 for x in self.moto.download_recording() if x.action == "AssumeRoleWithWebIdentity")
                    self.moto.stop_recording()
                    row = {"clients": clients, "connections": "one per request" if close else "keep-alive",
                           "credential_lifetime_s": dur, "load_s": round(secs, 1),
                           # Refresh cycles seen by the clients: each one brings a new key.
                           "expected_cycles": max(0, r["keys"] - 1),
                           "sts_exchanges": sts, "idp_refreshes": idp.stats()["refresh_grants"] - idp0,
                           "requests": r["requests"], "client_errors": r["errors"],
                           "error_samples": r["error_samples"][:3], "distinct_keys": r["keys"]}
                    out.append(row)
                    print(f"  amplification: {row}", flush=True)
                self.res["amplification"] = out
            finally:
                d.terminate()
        finally:
            idp.terminate()

    # -- caller lookup and audit trail ----------------------------------------
    def caller_lookup(self) -> None:
        """What knowing the caller costs: one sock_diag lookup (µs), and ECS GET
        rates of the default daemon (allowed_uids = ["self"]: a lookup per
        connection) against one with ["any"] (no lookup) and one that also
        writes the audit trail (the client's process found in /proc before a
        connection's first answer), side by side in alternating slices."""
        out = subprocess.run([str(self.examples / "bench_lookup"), "2000" if self.quick else "20000"],
                             capture_output=True, text=True, env=h.clean_env(), timeout=120)
        if out.returncode != 0:
            raise BenchError(f"bench_lookup failed: {out.stderr[-1000:]}")
        lookup = json.loads(out.stdout)
        variants: dict[str, h.Daemon] = {}
        audit_file = h.scratch_dir("audit-") / "audit.jsonl"
        for name, server in (("any", {"allowed_uids": ["any"]}), ("audit", {})):
            cfg = h.make_config(login=h.oidc_login(self.idp), aws={"flow": "cognito", "identity_pool_id": self.pool})
            cfg["server"].update(server)
            if name == "audit":
                cfg["audit"] = {"log": str(audit_file)}
            d = h.Daemon(config=cfg, moto_url=self.moto.url, binary=self.bins / "credbroker")
            d.write_refresh_token(self.idp.mint())
            d.start()
            variants[name] = d
            self.servers[f"credbroker-{name}"] = {"addr": d.addr, "auth": d.ecs_token(),
                                                  "path": "/v1/credentials/default"}
        names = ["credbroker", "credbroker-any", "credbroker-audit"]
        rounds, secs = (2, 0.5) if self.quick else (self.a.rounds, self.a.slice)
        rows = []
        try:
            for label, close in (("ecs keep-alive", False), ("ecs one connection per request", True)):
                per: dict[str, list[dict]] = {n: [] for n in names}
                for r in range(rounds):
                    for n in (names if r % 2 == 0 else names[::-1]):
                        per[n].append(self.load(n, "ecs", 16, secs, close))
                row: dict[str, Any] = {"scenario": label, "concurrency": 16}
                for n in names:
                    row[n] = {"per_s": statistics.median(x["per_s"] for x in per[n]),
                              "p99_us": statistics.median(x["p99_us"] for x in per[n]),
                              "errors": sum(x["errors"] for x in per[n])}
                for n in ("credbroker", "credbroker-audit"):
                    row[f"ratio_{n}_vs_any"] = statistics.median(
                        a["per_s"] / b["per_s"] for a, b in zip(per[n], per["credbroker-any"]) if b["per_s"])
                rows.append(row)
                print(f"  lookup {label:32} self/any {row['ratio_credbroker_vs_any']:.2f}  "
                      f"audit/any {row['ratio_credbroker-audit_vs_any']:.2f}", flush=True)
        finally:
            for d in variants.values():
                d.terminate()
            for n in names[1:]:
                self.servers.pop(n, None)
        events = audit_file.read_text().splitlines() if audit_file.exists() else []
        named = sum(1 for l in events if json.loads(l).get("pid"))
        self.res["caller_lookup"] = {"lookup": lookup, "rows": rows, "audit_events": len(events),
                                     "audit_events_with_pid": named}
        print(f"  lookup: {lookup}; audit events {len(events)} ({named} with a pid)", flush=True)

    # -- footprint ---------------------------------------------------------------
    @staticmethod
    def proc_status(pid: int) -> dict[str, int]:
        st = {}
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "Threads"):
                st[k] = int(v.split()[0])
        vol = invol = 0
        for t in Path(f"/proc/{pid}/task").iterdir():
            for line in (t / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches"):
                    vol += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches"):
                    invol += int(line.split()[1])
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        st.update(voluntary=vol, nonvoluntary=invol, cpu_ticks=int(fields[11]) + int(fields[12]))
        return st

    def footprint_idle(self) -> None:
        pid = self.d.proc.pid
        idle = 3 if self.quick else self.a.idle
        time.sleep(1)
        r0 = self.d.profile_status()["refreshes"]
        a = self.proc_status(pid)
        time.sleep(idle)
        b = self.proc_status(pid)
        # Scheduled refreshes inside the window (moto's Cognito credentials live 90 s).
        refreshes = self.d.profile_status()["refreshes"] - r0
        tick = os.sysconf("SC_CLK_TCK")
        self.res["footprint"] = {"rss_idle_kb": a["VmRSS"], "threads": a["Threads"], "idle_window_s": idle,
                                 "idle_cpu_ms": (b["cpu_ticks"] - a["cpu_ticks"]) * 1000 / tick,
                                 "idle_voluntary_switches": b["voluntary"] - a["voluntary"],
                                 "idle_nonvoluntary_switches": b["nonvoluntary"] - a["nonvoluntary"],
                                 "idle_refreshes": refreshes}
        print(f"  idle: {self.res['footprint']}", flush=True)

    def footprint_connections(self) -> None:
        n = 100 if self.quick else 1000
        hold = 3 if self.quick else 6
        argv = [str(self.examples / "bench_load"), self.d.addr, "hold", str(n), str(hold), "--auth", self.token]
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=h.clean_env())
        time.sleep(hold * 0.7)
        st = self.proc_status(self.d.proc.pid)
        open_fds = len(os.listdir(f"/proc/{self.d.proc.pid}/fd"))
        out, err = p.communicate(timeout=hold + 60)
        if p.returncode != 0:
            raise BenchError(f"bench_load hold failed: {err[-1000:]}")
        r = json.loads(out)
        self.res["footprint"].update(open_connections_tried=n, rss_with_connections_kb=st["VmRSS"],
                                     daemon_fds_while_held=open_fds, hold_errors=r["errors"],
                                     hold_error_samples=r["error_samples"][:2])
        print(f"  {n} connections: rss {st['VmRSS']} kB, fds {open_fds}, errors {r['errors']}", flush=True)

    def footprint_after(self) -> None:
        st = self.proc_status(self.d.proc.pid)
        binary = self.bins / "credbroker"
        stripped = h.scratch_dir("strip-") / "credbroker"
        subprocess.run(["strip", "-o", str(stripped), str(binary)], check=True)
        self.res["footprint"].update(rss_after_load_kb=st["VmRSS"], rss_peak_kb=st["VmHWM"],
                                     binary_bytes=binary.stat().st_size, stripped_binary_bytes=stripped.stat().st_size)

    def startup(self) -> None:
        from faultproxy import FaultProxy
        runs = 1 if self.quick else 5
        rows = []
        for _ in range(runs):
            aws = FaultProxy(self.moto.url, "start-aws").start()
            idpp = FaultProxy(self.idp.issuer, "start-idp").start()
            try:
                cfg = h.make_config(login=h.oidc_login(self.idp, token_endpoint=f"{idpp.url}/token"),
                                    aws={"flow": "cognito", "identity_pool_id": self.pool})
                d = h.Daemon(config=cfg, moto_url=aws.url, binary=self.bins / "credbroker")
                d.write_refresh_token(self.idp.mint())
                d.write_config()
                t0 = time.monotonic()
                d._spawn([str(d.binary), "serve", "-c", str(d.config_path)], d.env)
                t_listen = t_ready = None
                while time.monotonic() - t0 < 30:
                    if t_listen is None and h.LISTENING_RE.search(d.current_logs()):
                        t_listen = time.monotonic()
                        d.addr = h.LISTENING_RE.search(d.current_logs()).group(1)
                    if d.addr:
                        try:
                            if d.get("/readyz", timeout=1).status == 200:
                                t_ready = time.monotonic()
                                break
                        except OSError:
                            pass
                    time.sleep(0.002)
                if t_ready is None:
                    raise BenchError(f"startup daemon never ready:\n{h.tail(d.current_logs())}")
                ends = [e.t_out for e in aws.entries() + idpp.entries() if e.t_out]
                last_up = max(ends)
                rows.append({"listening_ms": (t_listen - t0) * 1000, "ready_ms": (t_ready - t0) * 1000,
                             "upstream_ms": (last_up - min(e.t_in for e in idpp.entries() + aws.entries())) * 1000,
                             "ready_after_upstream_ms": (t_ready - last_up) * 1000,
                             "upstream_requests": len(ends)})
                d.terminate()
            finally:
                aws.stop()
                idpp.stop()
        self.res["startup"] = {k: statistics.median(r[k] for r in rows) for k in rows[0]} | {"runs": runs}
        print(f"  start-up: {self.res['startup']}", flush=True)

    def profile(self) -> None:
        """perf over credbroker under ECS keep-alive load at 16 connections."""
        if self.quick or not shutil.which("perf"):
            return
        data = h.scratch_dir("perf-") / "perf.data"
        rec = subprocess.Popen(["perf", "record", "-F", "999", "-g", "-o", str(data), "-p", str(self.d.proc.pid),
                                "--", "sleep", "4"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.load("credbroker", "ecs", 16, 4)
        rec.wait(30)
        rep = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children", "--sort", "dso,symbol",
                              "--percent-limit", "1.5", "-g", "none"], capture_output=True, text=True)
        lines = [l for l in rep.stdout.splitlines() if l.strip() and not l.startswith("#")]
        self.res["profile"] = lines[:30]

    def run(self) -> dict[str, Any]:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 20000), hard))
        self.res["machine"] = {"date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               "kernel": platform.release(), "cpus": os.cpu_count(),
                               "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                                            if l.startswith("model name")), "?"),
                               "load_before": os.getloadavg(), "nofile": min(hard, 20000)}
        try:
            steps = [("start", self.start), ("footprint: idle", self.footprint_idle),
                     ("footprint: open connections", self.footprint_connections),
                     ("throughput", self.throughput), ("caller lookup", self.caller_lookup),
                     ("profile", self.profile),
                     ("footprint: after load", self.footprint_after),
                     ("time to first credential", self.first_credential),
                     ("upstream amplification", self.amplification), ("start-up", self.startup)]
            for name, fn in steps:
                print(f"bench: {name}", flush=True)
                fn()
        finally:
            self.stop()
        self.res["machine"]["load_after"] = os.getloadavg()
        return self.res


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--peer-venv", required=True)
    ap.add_argument("--oha", default="")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--slice", type=float, default=2.0)
    ap.add_argument("--processes", type=int, default=30)
    ap.add_argument("--idle", type=int, default=60)
    ap.add_argument("--json-out", required=True)
    a = ap.parse_args()
    h.scrub_process_env()
    res = Bench(a).run()
    Path(a.json_out).write_text(json.dumps(res, indent=1))
    print(f"bench: figures in {a.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
