"""Issue 4, part 3: crash safety of the refresh token and the state files.

kill -9 loop: oidc-provider rotates the refresh token on every use and treats
a reuse as theft (the whole grant is revoked). The daemon refreshes at every
start, so start → sleep a random 0..T ms → SIGKILL, many times, exercises the
rotation at random moments. The IdP's token endpoint is reached through a
pass-through FaultProxy, which sees every token the IdP issues and every token
the daemon presents. After each kill the refresh-token file must be intact
(non-empty, 0600, a token the IdP issued). When it no longer holds the token
the IdP considers current (the kill landed between the IdP committing a
rotation and the new token reaching the file), the test leaves everything as
it is — the daemon may roll the rotation forward from its temp file — and the
next start decides: it presents the current token (recovered) or a
rotated-away one (the IdP answers invalid_grant and revokes the grant: a
lockout; a new grant is minted and the loop goes on). A second phase kills the
daemon right after the IdP's answer was written to its socket, to measure that
window directly. Every lockout is reported with its timing; a lockout although
the new token was already in a temp file (no roll-forward), or a temp file left
after the final clean start and stop, fails the test.

The loop runs twice: against strict reuse detection (lockouts there are a
finding: the window no client can close) and against an IdP with a 30 s reuse
grace period (tests/oidc/server.mjs RT_GRACE, as Okta's default leeway), where
a restart presents the rotated-away token on disk within the period and must
never be locked out (0 lockouts, a requirement).

Also: corrupt or truncated state files, short ECS tokens (exit 64), stale temp
files of killed writes at start-up, port already in use, group/world readable
secret files.

Default: 250 random + 50 targeted kills; CREDBROKER_LONG=1: 2000 + 500.
Figures: target/security/crash.json.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import harness as h
import security_report
from faultproxy import Entry, FaultProxy

LONG = os.environ.get("CREDBROKER_LONG") == "1"
RANDOM_KILLS = 2000 if LONG else 250
TARGETED_KILLS = 500 if LONG else 50
ID_TTL = 20
LOOP_BUDGET = 1800 if LONG else 200  # seconds, a hard stop for the kill loops
GRACE = 30  # s: the IdP's refresh-token reuse grace period in the second run (Okta's default leeway)


def is_token(e: Entry) -> bool:
    return e.method == "POST" and e.path.split("?")[0].endswith("/token")


@dataclass
class Kill:
    cycle: int
    phase: str
    delay_ms: float  # planned delay (random phase) or extra delay after the IdP answer (targeted)
    t_spawn: float
    t_kill: float = 0.0
    category: str = ""
    token_lost: bool = False  # after the kill, the file does not hold the IdP's current token
    temp_has_token: bool = False  # ... but a leftover temp file does
    outcome: str = ""  # for lost tokens: "recovered by the next start" / "lockout"
    entries: list[Entry] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def lockout(self) -> bool:
        return self.outcome == "lockout"

    def ms(self, t: float | None) -> float | None:
        return None if t is None else round((t - self.t_spawn) * 1000, 2)


class Rig:
    """The daemon's files, the IdP grant we track, and the spawn/kill loop."""

    def __init__(self, daemon: h.Daemon, idp: h.OidcProvider, proxy: FaultProxy):
        self.d, self.idp, self.proxy = daemon, idp, proxy
        self.grace = idp.rt_grace > 0  # the IdP accepts a rotated-away token for a while
        self.rt_path = daemon.refresh_token_path()
        self.known: set[str] = set()
        self.valid = ""
        self.kills: list[Kill] = []
        self.pending: Kill | None = None  # the kill whose rotation is not on disk (yet)
        self.lockouts: list[Kill] = []
        self.recovered: list[Kill] = []
        self.restart_confirmations: list[str] = []
        self.mints = 0
        self.seen_entries = 0
        self.unexplained_invalid_grant: list[int] = []
        self.temp_seen: dict[str, dict[str, Any]] = {}
        self.max_temps_at_once = 0
        self.proc: subprocess.Popen | None = None
        self.armed: Kill | None = None

    # -- grant bookkeeping -------------------------------------------------------

    def new_grant(self) -> None:
        tok = self.idp.mint("alice")
        self.mints += 1
        self.known.add(tok)
        self.valid = tok
        self.pending = None
        self.d.write_refresh_token(tok)

    def absorb(self, cycle: int, kill: Kill | None = None) -> bool:
        """Follow what the IdP saw (at the proxy): tokens presented, rotations
        made. Returns True when a lockout was detected (a new grant is needed)."""
        entries = self.proxy.entries(where=is_token)
        locked = False
        for e in entries[self.seen_entries:]:
            if kill is not None:
                kill.entries.append(e)
            presented = e.form().get("refresh_token", "")
            body = e.resp_json() or {}
            if self.pending is not None and presented:
                if presented == self.valid:
                    self.pending.outcome = "recovered by the next start"
                    self.recovered.append(self.pending)
                elif self.grace and e.status == 200:
                    # The restart presented the token on disk, rotated away by
                    # the lost exchange; the IdP's grace period took it.
                    self.pending.outcome = "recovered by the IdP's grace period"
                    self.recovered.append(self.pending)
                else:
                    self.pending.outcome = "lockout"
                    self.lockouts.append(self.pending)
                    locked = True
                self.pending = None
            if e.status == 200 and body.get("refresh_token"):
                if presented != self.valid and not (self.grace and presented in self.known):
                    (kill.problems if kill else []).append("the IdP rotated a token we did not track as current")
                self.valid = body["refresh_token"]
                self.known.add(self.valid)
            elif e.status == 400 and body.get("error") == "invalid_grant" and not locked:
                self.unexplained_invalid_grant.append(cycle)
                locked = True
        self.seen_entries = len(entries)
        return locked

    # -- processes -----------------------------------------------------------------

    def spawn(self, marker: str) -> subprocess.Popen:
        with open(self.d.log_path, "ab") as log:
            log.write(f"\n### {marker}\n".encode())
            log.flush()
            self.proc = subprocess.Popen([str(self.d.binary), "serve", "-c", str(self.d.config_path)],
                                         env=self.d.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        return self.proc

    def hook(self, entry: Entry) -> None:
        """Targeted phase: SIGKILL as soon as the IdP's answer is on the daemon's socket."""
        kill = self.armed
        if kill is None or self.proc is None or not is_token(entry):
            return  # (an invalid_grant answer also ends the cycle: it is how a lockout shows)
        self.armed = None
        if kill.delay_ms:
            time.sleep(kill.delay_ms / 1000)
        try:
            os.kill(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        kill.t_kill = time.monotonic()

    # -- checks ------------------------------------------------------------------

    def temp_files(self) -> list[Path]:
        """Leftover temp files of atomic writes (left in place: the daemon may roll them forward)."""
        found = []
        for d in (self.rt_path.parent, self.d.runtime_dir / "credbroker"):
            if d.is_dir():
                found += [p for p in d.iterdir() if ".tmp." in p.name]
        for p in found:
            if str(p) not in self.temp_seen:
                try:
                    content, mode = p.read_text(), p.stat().st_mode & 0o777
                except (OSError, UnicodeDecodeError):
                    content, mode = "", 0
                self.temp_seen[str(p)] = {"kind": p.name.split(".tmp.")[0].lstrip("."), "mode": oct(mode),
                                          "holds an issued refresh token": content in self.known}
        self.max_temps_at_once = max(self.max_temps_at_once, len(found))
        return found

    def check_file(self, kill: Kill) -> str:
        try:
            st = self.rt_path.stat()
            content = self.rt_path.read_text()
        except OSError as e:
            kill.problems.append(f"refresh-token file unreadable: {e}")
            return ""
        if not content:
            kill.problems.append("refresh-token file is empty")
        if st.st_mode & 0o777 != 0o600:
            kill.problems.append(f"refresh-token file mode {oct(st.st_mode & 0o777)}")
        if content != content.strip():
            kill.problems.append("refresh-token file has stray whitespace")
        if content not in self.known:
            kill.problems.append("refresh-token file holds a token the IdP never issued (torn write?)")
        ecs = self.d.ecs_token_path
        if ecs.exists() and not ecs.read_text():
            kill.problems.append("ECS token file is empty")
        return content

    def classify(self, kill: Kill, on_disk: str) -> None:
        toks = [e for e in kill.entries if is_token(e)]
        rotated = [e for e in toks if e.status == 200]
        if not toks:
            kill.category = "before the IdP request"
        elif not rotated:
            kill.category = "IdP refused"
        else:
            e = rotated[-1]
            if e.t_out is None or kill.t_kill < e.t_out:
                kill.category = "IdP exchange in flight (rotation committed, answer not yet delivered)"
            elif on_disk == self.valid:
                kill.category = "after the new token was saved"
            else:
                kill.category = "answer delivered, new token not yet saved"

    # -- one cycle ------------------------------------------------------------------

    def cycle(self, n: int, phase: str, delay_ms: float) -> Kill:
        kill = Kill(n, phase, delay_ms, time.monotonic())
        if phase == "targeted":
            self.armed = kill
        proc = self.spawn(f"cycle {n} ({phase})")
        kill.t_spawn = time.monotonic()
        if phase == "random":
            time.sleep(delay_ms / 1000)
            proc.kill()
            kill.t_kill = time.monotonic()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:  # targeted: the IdP answer never came
            proc.kill()
            kill.t_kill = time.monotonic()
            proc.wait()
            if not self.proxy.entries(since=kill.t_spawn, where=is_token):
                kill.problems.append("no IdP exchange within 5 s of the start")
        self.armed = None
        if not self.proxy.wait_idle(10):
            kill.problems.append("IdP exchange still in flight 10 s after the kill")
        locked = self.absorb(n, kill)
        self.kills.append(kill)
        on_disk = self.check_file(kill)
        self.classify(kill, on_disk)
        temps = self.temp_files()
        if locked:
            self.confirm_lockout(n)
            self.new_grant()
            return kill
        if on_disk != self.valid and self.pending is None:
            kill.token_lost = True
            kill.temp_has_token = any(_read(p) == self.valid for p in temps)
            self.pending = kill
        return kill

    def confirm_lockout(self, n: int) -> None:
        """For the first two lockouts, show what a user sees: a normal start ends in login_required."""
        if len(self.restart_confirmations) >= 2:
            return
        self.d.start(wait_ready=False)
        try:
            st = self.d.wait_state("login_required", 20)
            self.restart_confirmations.append(f"after cycle {n}: restart → {st['state']} "
                                              f"({(st.get('last_error') or {}).get('kind')})")
        finally:
            self.d.stop()
        self.seen_entries = len(self.proxy.entries(where=is_token))


def _read(p: Path) -> str:
    try:
        return p.read_text()
    except (OSError, UnicodeDecodeError):
        return ""


def _calibrate(rig: Rig, runs: int = 3) -> dict[str, Any]:
    """Start the daemon fully a few times; time the IdP request, its answer and the saved rotation."""
    req, resp, saved = [], [], []
    for i in range(runs):
        before = rig.rt_path.read_text()
        n0 = len(rig.proxy.entries(where=is_token))
        proc = rig.spawn(f"calibration {i}")
        t0 = time.monotonic()
        t_saved = None
        while time.monotonic() - t0 < 10:
            now = _read(rig.rt_path)
            if now and now != before:
                t_saved = time.monotonic()
                break
            time.sleep(0.0005)
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        rig.proxy.wait_idle(5)
        rig.absorb(-1)
        e = [x for x in rig.proxy.entries(where=is_token)[n0:] if x.status == 200]
        if e and t_saved and e[0].t_out:
            req.append((e[0].t_in - t0) * 1000)
            resp.append((e[0].t_out - t0) * 1000)
            saved.append((t_saved - t0) * 1000)
    assert saved, "calibration: the daemon never saved a rotated refresh token"
    return {"IdP request reached the proxy ms (median)": round(statistics.median(req), 1),
            "IdP answer written to the daemon ms (median)": round(statistics.median(resp), 1),
            "rotated token on disk ms (median)": round(statistics.median(saved), 1),
            "answer → token on disk ms (min/max, 0.5 ms polling)":
                [round(min(s - r for s, r in zip(saved, resp)), 2), round(max(s - r for s, r in zip(saved, resp)), 2)]}


@pytest.mark.parametrize("grace", [0, GRACE], ids=["strict-reuse-detection", f"grace-{GRACE}s"])
def test_kill9_during_refresh_token_rotation(moto: h.Moto, oidc_factory, daemon_factory, grace: int):
    """Strict reuse detection (oidc-provider's default) and a reuse grace
    period (Okta's default leeway, 30 s): the same kill loop against each."""
    idp = oidc_factory(id_ttl=ID_TTL, rt_grace=grace)
    proxy = FaultProxy(idp.issuer, "crash-idp").start()
    try:
        config = h.make_config(login=h.oidc_login(idp, token_endpoint=f"{proxy.url}/token"),
                               aws={"flow": "sts", "role_arn": h.OIDC_ROLE_ARN, "session_name": h.SESSION_NAME})
        d = daemon_factory(config, rust_log="info,credbroker=debug")
        d.write_config()
        rig = Rig(d, idp, proxy)
        rig.new_grant()
        calib = _calibrate(rig)
        window = max(400.0, 1.5 * calib["rotated token on disk ms (median)"])
        seed = int(os.environ.get("CREDBROKER_SEED") or time.time_ns() % 1_000_000)
        rng = random.Random(seed)
        proxy.on_response = rig.hook
        started = time.monotonic()
        for n in range(RANDOM_KILLS):
            rig.cycle(n, "random", rng.uniform(0, window))
            if time.monotonic() - started > LOOP_BUDGET:
                break
        random_seconds = time.monotonic() - started
        t2 = time.monotonic()
        for n in range(TARGETED_KILLS):
            # Half right at the answer; half up to 3 ms later, across the daemon's parse+write window.
            rig.cycle(RANDOM_KILLS + n, "targeted", 0.0 if n % 2 == 0 else rng.uniform(0, 3))
            if time.monotonic() - started > LOOP_BUDGET:
                break
        targeted_seconds = time.monotonic() - t2
        proxy.on_response = None

        # The end: a normal start must refresh with what is on disk (or, if the
        # last kill lost the rotation for good, end in login_required).
        d.start(wait_ready=False)
        st = h.wait_for(lambda: (s := d.profile_status())["state"] in ("ready", "login_required") and s, 30,
                        "the final start to refresh")
        d.stop()
        proxy.wait_idle(5)
        if rig.absorb(-2):
            rig.new_grant()
            d.start()
            st = d.profile_status()
            d.stop()
            rig.absorb(-3)
        final_state = st["state"]
        final_ok = final_state == "ready" and d.read_refresh_token() == rig.valid
        leftover = [str(p) for p in rig.temp_files()]
        logs = d.logs()
    finally:
        proxy.stop()

    def summary(phase: str) -> dict[str, Any]:
        ks = [k for k in rig.kills if k.phase == phase]
        cats: dict[str, int] = {}
        for k in ks:
            cats[k.category] = cats.get(k.category, 0) + 1
        return {"kills": len(ks), "lockouts": sum(k.lockout for k in ks),
                "kills after which the IdP had rotated the token": sum(
                    1 for k in ks if any(e.status == 200 for e in k.entries)),
                "kills that found the grant already revoked (lockout detected)": sum(
                    1 for k in ks if k.category == "IdP refused"),
                "rotations lost at the kill": sum(k.token_lost for k in ks),
                "recovered by the next start": sum(k.outcome == "recovered by the next start" for k in ks),
                "recovered by the IdP's grace period": sum(k.outcome == "recovered by the IdP's grace period"
                                                           for k in ks),
                "kills by moment": cats}

    rnd, tgt = summary("random"), summary("targeted")
    problems = [f"cycle {k.cycle}: {p}" for k in rig.kills for p in k.problems]
    after_answer = [(k, (k.t_kill - k.entries[-1].t_out) * 1000) for k in rig.kills
                    if k.phase == "targeted" and k.entries and k.entries[-1].t_out and k.entries[-1].status == 200]
    lost_after = [ms for k, ms in after_answer if k.token_lost]
    kept_after = [ms for k, ms in after_answer if not k.token_lost]
    evidence = [{"cycle": k.cycle, "phase": k.phase, "moment": k.category,
                 "IdP request at ms": k.ms(k.entries[-1].t_in if k.entries else None),
                 "IdP answer written at ms": k.ms(k.entries[-1].t_out if k.entries else None),
                 "SIGKILL at ms": k.ms(k.t_kill),
                 "kill − answer ms": (round((k.t_kill - k.entries[-1].t_out) * 1000, 2)
                                      if k.entries and k.entries[-1].t_out else None),
                 "new token in a temp file": k.temp_has_token}
                for k in rig.lockouts[:12]]
    bad_lockouts = [k for k in rig.lockouts if k.category in ("before the IdP request", "after the new token was saved")]
    temps = list(rig.temp_seen.values())
    temp_kinds: dict[str, int] = {}
    for t in temps:
        temp_kinds[t["kind"]] = temp_kinds.get(t["kind"], 0) + 1
    panics = logs.count("panicked")
    lost = [k for k in rig.kills if k.token_lost]  # the file did not hold the IdP's current token after the kill
    in_temp = [k for k in lost if k.temp_has_token]
    rolled = [k for k in in_temp if k.outcome == "recovered by the next start"]
    temp_lockouts = [k for k in in_temp if k.lockout]
    figures = {
        "random phase: kills": rnd["kills"], "random phase: lockouts": rnd["lockouts"],
        "random phase: rotations lost at the kill": rnd["rotations lost at the kill"],
        "random phase: ... of which the next start recovered (temp file rolled forward)": rnd["recovered by the next start"],
        "random phase: kill delay range ms": f"0..{window:.0f} (uniform, seed {seed})",
        "random phase: kills by moment": rnd["kills by moment"],
        "targeted phase: kills (right after the IdP answer was written)": tgt["kills"],
        "targeted phase: ... of which the answer was a rotation (200)":
            tgt["kills after which the IdP had rotated the token"],
        "targeted phase: ... of which the start found the grant revoked (detects the previous lockout)":
            tgt["kills that found the grant already revoked (lockout detected)"],
        "targeted phase: lockouts": tgt["lockouts"],
        "targeted phase: rotations lost at the kill": tgt["rotations lost at the kill"],
        "targeted phase: ... of which the next start recovered": tgt["recovered by the next start"],
        "IdP reuse grace period s (0: strict reuse detection)": grace,
        "rotations lost at a kill that the grace period saved (random / targeted)":
            "{} / {}".format(rnd["recovered by the IdP's grace period"], tgt["recovered by the IdP's grace period"]),
        "IdP: rotated-away tokens accepted inside the grace period": idp.stats().get("grace_reuses", 0),
        "targeted phase: kills by moment": tgt["kills by moment"],
        "targeted phase: SIGKILL after the answer, token not in the file (ms min/max)":
            [round(min(lost_after), 2), round(max(lost_after), 2)] if lost_after else None,
        "targeted phase: SIGKILL after the answer, token in the file (ms min/max)":
            [round(min(kept_after), 2), round(max(kept_after), 2)] if kept_after else None,
        "all phases: rotations lost at the kill (new token not in the refresh-token file)": len(lost),
        "all phases: ... new token already in a temp file (written, not yet renamed)": len(in_temp),
        "all phases: ... ... of those, rolled forward by the next start": len(rolled),
        "all phases: ... new token in no file": len(lost) - len(in_temp),
        "all phases: lockouts": len(rig.lockouts),
        "temp files seen after kills": len(temps), "temp files by target": temp_kinds,
        "most temp files present at once": rig.max_temps_at_once,
        "temp files left after the final clean start/stop": [Path(p).name for p in leftover],
        "refresh-token file integrity problems": len(problems),
        "lockouts not explained by the rotation window": len(bad_lockouts),
        "invalid_grant answers without a lost rotation to explain them": len(rig.unexplained_invalid_grant),
        "lockouts confirmed by a restart": rig.restart_confirmations,
        "grants minted (1 + one per lockout)": rig.mints, "panics in the log": panics,
        "final start": final_state, "seconds (random / targeted)": f"{random_seconds:.0f} / {targeted_seconds:.0f}",
        **calib, "lockout evidence (first 12)": evidence,
    }
    lock_ms = sorted((k.t_kill - k.entries[-1].t_out) * 1000 for k in rig.lockouts
                     if k.entries and k.entries[-1].t_out)
    notes = [
        "A lockout = the next start presented a rotated-away refresh token and the IdP answered invalid_grant "
        "(reuse detection revokes the grant; the first two were also shown to end in login_required by a normal "
        "start). The user has to log in again.",
        "Where the lockouts come from: the window between the IdP committing a rotation and the new token "
        "reaching the refresh-token file. It has two parts. (1) The exchange in flight: the IdP has retired the "
        "old token, its answer dies with the process; no client can close this (it would take the IdP accepting "
        "the previous token for a grace period). (2) The answer received, the new token not yet on disk: the "
        "daemon's own window: read and parse the answer, then one write into the temp file it opened before "
        "the request (the fsync and rename follow, but a kill after the write is recovered); measured above "
        "as 'SIGKILL after the answer, token not in the file' (the test runs the debug build).",
        "The roll-forward closes the end of part (2): a kill after the temp file holding the new token was "
        "written but before the rename is recovered at the next read, which renames the temp file into place "
        "(counted above as 'rolled forward'). A kill before the temp file holds the token is not recoverable.",
        "Kills are at random moments (random phase) and deliberately right after the IdP's answer was written "
        "to the daemon's socket (targeted phase, 0–3 ms later), so the targeted lockout rate measures the "
        "daemon's window itself, not how often a real crash lands in it.",
        f"Random kill moments: seed {seed} (set CREDBROKER_SEED to repeat). CREDBROKER_LONG=1 runs "
        f"{2000} + {500} kills.",
    ]
    # Lockouts are recorded as a finding (the target is 0; the README states this window), not a failure:
    # part (1) of the window cannot be closed by the daemon. Lockouts outside the window fail the test.
    findings = []
    if rig.lockouts:
        cats = _count(k.category for k in rig.lockouts)
        in_flight = cats.pop("IdP exchange in flight (rotation committed, answer not yet delivered)", 0)
        delivered = cats.pop("answer delivered, new token not yet saved", 0)
        findings.append(
            f"{len(rig.lockouts)} lockouts in {len(rig.kills)} kills ({rnd['lockouts']} of {rnd['kills']} random "
            f"kills; {tgt['lockouts']} of the {tgt['kills after which the IdP had rotated the token']} targeted kills "
            f"that followed a rotating answer). Each kill fell between the IdP committing a rotation and the new "
            f"token reaching a file: {in_flight} while the IdP exchange was in flight (the answer died with the "
            f"process), {delivered} after the answer reached the daemon but before a temp file held the new token"
            + ("; other: " + "; ".join(f"{c}: {n}" for c, n in cats.items()) if cats else "")
            + (f". Their SIGKILLs came {lock_ms[0]:.2f} to {lock_ms[-1]:.2f} ms after the IdP's answer was "
               f"written (negative: before)" if lock_ms else "")
            + f". The roll-forward rescued {len(rolled)} of the {len(lost)} rotations lost at a kill (every one "
              f"whose temp file already held the new token). The target is 0; the README states this window "
              f"(\"lost only in a crash window no client can close\") and that an IdP reuse grace period closes "
              f"it (the grace run of this loop).")
    if grace:
        # With a grace period every lost rotation is recoverable by a restart
        # within the period, so the target 0 is a requirement here.
        notes = [
            f"The IdP accepts a rotated-away refresh token for {grace} s after its first use (as Okta's leeway, "
            "Cognito's RetryGracePeriodSeconds, Auth0's rotation overlap or Keycloak's refreshTokenMaxReuse do); "
            "after that a reuse revokes the grant. The daemon needs nothing for it: a restarted daemon presents "
            "the token on disk at once, which is the rotated-away one when a kill lost the rotation, and the IdP "
            "rotates it again.",
            *notes[2:],
        ]
        findings = []
    title = ("kill -9 during refresh-token rotation (reuse detection on)" if not grace else
             f"kill -9 during refresh-token rotation (IdP reuse grace period {grace} s)")
    security_report.record(
        "crash", "kill9-rotation" + ("-grace" if grace else ""), title=title,
        tried=len(rig.kills), ok=len(rig.kills) - len(rig.lockouts), unit="kills",
        verdict="fail" if (problems or bad_lockouts or panics or not final_ok or rig.unexplained_invalid_grant
                           or temp_lockouts or leftover or (grace and rig.lockouts))
        else ("finding" if findings else "pass"),
        figures=figures, findings=findings, notes=notes)

    scan = h.SecretScan()
    for tok in rig.known:
        scan.add("refresh token", tok)
    scan.add("ECS token", d.ecs_token())
    leaks = scan.leaks({"kill-loop daemon log": logs})
    security_report.record(
        "secrets", "kill-loop" + ("-grace" if grace else ""),
        title="No refresh token in the logs of the kill -9 loop (RUST_LOG=info,credbroker=debug"
              + (f", grace {grace} s)" if grace else ")"),
        tried=len(rig.known) + 1, ok=len(rig.known) + 1 - len(leaks), unit="secret values",
        verdict="fail" if leaks else "pass",
        figures={"refresh tokens issued and searched": len(rig.known), "log lines scanned": logs.count("\n"),
                 "leaks": len(leaks)})

    assert not leaks, "secrets in the kill-loop log:\n" + "\n".join(leaks[:10])
    assert rnd["kills"] >= min(RANDOM_KILLS, 100), f"only {rnd['kills']} random kills fitted in the budget"
    assert not problems, "refresh-token file problems after kills:\n" + "\n".join(problems[:20])
    assert not bad_lockouts, f"lockouts outside the rotation window: {[k.cycle for k in bad_lockouts]}"
    assert not rig.unexplained_invalid_grant, \
        f"the daemon presented a rotated-away token with no lost rotation to explain it: {rig.unexplained_invalid_grant}"
    assert panics == 0, "the daemon panicked"
    assert final_ok, f"final start: state {final_state}, file token current: {d.read_refresh_token() == rig.valid}"
    assert not temp_lockouts, ("lockouts although the new token was in a temp file (no roll-forward): "
                               f"{[k.cycle for k in temp_lockouts]}")
    assert not leftover, f"temp files left after a clean start and stop: {[Path(p).name for p in leftover]}"
    if grace:
        assert not rig.lockouts, (f"{len(rig.lockouts)} lockouts with a {grace} s reuse grace period: "
                                  f"{[k.cycle for k in rig.lockouts]}")


def _count(items) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in items:
        out[i] = out.get(i, 0) + 1
    return out


# ---------------------------------------------------------------------------
# Corrupt and truncated state files
# ---------------------------------------------------------------------------

STATE_CASES: list[dict[str, Any]] = []

# Known daemon findings among the state-file cases: case name → what is wrong.
# Such a case is recorded with ok="finding" by a strict-xfail test and shown as a
# finding in the report; delete the entry (and the marker) once fixed. Empty: the
# one recorded so far (a 4-byte ECS token file was accepted silently) is fixed
# (exit 64 for fewer than 16 characters) and asserted by a plain test.
FINDINGS: dict[str, str] = {}


def _record_state_case(case: str, outcome: str, message: str, panic: bool, ok: bool | str) -> None:
    """``ok``: True, False, or "finding" (a known daemon finding listed in FINDINGS, see its xfail test)."""
    STATE_CASES[:] = [c for c in STATE_CASES if c["case"] != case]
    STATE_CASES.append({"case": case, "outcome": outcome, "message": message[:240], "panic": panic,
                        "as expected": ok})
    bad = any(c["as expected"] is False or c["panic"] for c in STATE_CASES)
    security_report.record(
        "crash", "state-files", title="Corrupt, truncated or misplaced state files, port in use, file modes",
        tried=len(STATE_CASES), ok=sum(1 for c in STATE_CASES if c["as expected"] is True), unit="cases",
        verdict="fail" if bad else ("finding" if any(c["as expected"] == "finding" for c in STATE_CASES)
                                    else "pass"),
        figures={"cases": STATE_CASES},
        findings=[f"{c['case']}: {FINDINGS.get(c['case'], c['outcome'])}" for c in STATE_CASES
                  if c["as expected"] == "finding"],
        notes=["'message' is the first log or stderr line naming the file (timestamp and target stripped)."])


LOG_PREFIX = re.compile(r"^\S+Z\s+(TRACE|DEBUG|INFO|WARN|ERROR)\s+(\S+: )*")


def _log_line(text: str, *needles: str) -> str:
    for line in text.splitlines():
        if all(n in line for n in needles):
            m = LOG_PREFIX.match(line.strip())
            return (m.group(1) + " " + line.strip()[m.end():]) if m else line.strip()
    return ""


RT_CASES = {
    "garbage": b"not-a-refresh-token-%$#@!",
    "empty": b"",
    "whitespace-only": b"\n  \n\t\n",
    "invalid-utf8": b"\xff\xfe\x00\x9fgarbage",
    "huge-2MiB": b"A" * (2 << 20),
    "directory": None,
}


@pytest.mark.parametrize("case", list(RT_CASES))
def test_corrupt_refresh_token_file(case: str, oidc_daemon):
    daemon = oidc_daemon("sts")
    rt = daemon.refresh_token_path()
    if RT_CASES[case] is None:
        rt.unlink()
        rt.mkdir(mode=0o700)
    else:
        rt.write_bytes(RT_CASES[case])
        os.chmod(rt, 0o600)
    daemon.start(wait_ready=False)
    st = h.wait_for(lambda: (s := daemon.profile_status()).get("last_error") and s, 30,
                    "the first refresh to fail", interval=0.2)
    err = st["last_error"]
    logs = daemon.current_logs()
    # A clear error: status says what went wrong, a WARN/ERROR log line names the file.
    line = _log_line(logs, str(rt)) or _log_line(logs, "ERROR") or _log_line(logs, "WARN")
    ok = bool(err.get("message")) and str(rt) in (err["message"] + logs) and st["state"] in (
        "login_required", "starting", "retrying")
    # Recovery: write a good token (a new login) → credentials without a restart.
    if rt.is_dir():
        rt.rmdir()
    daemon.write_refresh_token(daemon.idp.mint("alice"))
    recovered = True
    try:
        daemon.wait_ready(30)
    except h.HarnessError:
        recovered = False
    panic = "panicked" in daemon.logs()
    _record_state_case(f"refresh-token file: {case}", f"{st['state']} ({err.get('kind')}); recovered after a new "
                       f"token: {recovered}", line or err.get("message", ""), panic, ok and recovered)
    assert not panic, "the daemon panicked"
    assert ok, f"unclear error for a {case} refresh-token file: status {st}\n{h.tail(logs, 20)}"
    assert recovered, f"no recovery after writing a good token\n{h.tail(daemon.current_logs(), 30)}"
    daemon.stop()


ID_CASES = {"garbage": b"garbage!! not an id", "empty": b"", "invalid-utf8": b"\xff\xfe\xfa",
            "too-long": b"us-east-1:" + b"a" * 300}


@pytest.mark.parametrize("case", list(ID_CASES))
def test_corrupt_identity_id_cache(case: str, oidc_daemon, moto: h.Moto):
    daemon = oidc_daemon("cognito")
    path = daemon.identity_id_path()
    h.write_secret(path, "")
    path.write_bytes(ID_CASES[case])
    moto.start_recording()
    daemon.start()
    logs = daemon.current_logs()
    line = _log_line(logs, "identity-id")
    new_id = path.read_text().strip()
    get_ids = moto.count("GetId")
    panic = "panicked" in logs
    ok = bool(line) and get_ids == 1 and re.fullmatch(r"[a-z0-9-]+:[0-9a-f-]+", new_id) is not None
    _record_state_case(f"identity-id cache: {case}", f"ready; GetId called {get_ids}×; cache rewritten",
                       line, panic, ok)
    assert not panic
    assert line, f"no log line about the corrupt identity-id cache:\n{h.tail(logs, 20)}"
    assert get_ids == 1, f"GetId called {get_ids} times (expected once, to replace the corrupt cache)"
    assert re.fullmatch(r"[a-z0-9-]+:[0-9a-f-]+", new_id), f"cache not rewritten: {new_id!r}"
    daemon.stop()


def test_empty_or_unreadable_ecs_token_file_is_a_clear_startup_error(oidc_daemon):
    results = []
    for case, content in (("empty", b""), ("invalid-utf8", b"\xff\xfe\x00")):
        daemon = oidc_daemon("sts")
        h.write_secret(daemon.ecs_token_path, "")
        daemon.ecs_token_path.write_bytes(content)
        daemon.write_config()
        proc = subprocess.run([str(daemon.binary), "serve", "-c", str(daemon.config_path)], env=daemon.env,
                              capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
        panic = "panicked" in proc.stderr
        ok = proc.returncode not in (0, 101) and str(daemon.ecs_token_path) in proc.stderr and not panic
        _record_state_case(f"ECS token file: {case}", f"exit {proc.returncode}",
                           _log_line(proc.stderr, "credbroker:") or proc.stderr.strip()[-200:], panic, ok)
        results.append((case, proc, ok))
    for case, proc, ok in results:
        assert ok, f"ECS token file {case}: exit {proc.returncode}\n{proc.stderr[-2000:]}"


MIN_ECS_TOKEN = 16  # the daemon refuses shorter ECS token files (a generated token has 43 characters)


@pytest.mark.parametrize("length", [4, MIN_ECS_TOKEN - 1])
def test_short_ecs_token_file_is_refused_with_exit_64(length: int, oidc_daemon):
    """Formerly a finding: a truncated (4-byte) ECS token file was accepted
    silently as the token. Now start-up fails with exit 64 (usage), the message
    names the file and the length, and never the token itself."""
    daemon = oidc_daemon("sts")
    token = "Q7z" + "k" * (length - 4) + "!" if length > 4 else "Q7z!"
    assert len(token) == length
    h.write_secret(daemon.ecs_token_path, token)
    daemon.write_config()
    proc = subprocess.run([str(daemon.binary), "serve", "-c", str(daemon.config_path)], env=daemon.env,
                          capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    line = _log_line(proc.stderr, str(daemon.ecs_token_path))
    names_length = bool(re.search(rf"(?<![0-9]){length}(?![0-9])", line.replace(str(daemon.ecs_token_path), "")))
    panic = "panicked" in proc.stderr
    ok = proc.returncode == 64 and bool(line) and names_length and token not in proc.stderr and not panic
    _record_state_case(f"ECS token file of {length} characters", f"exit {proc.returncode}",
                       line or proc.stderr.strip()[-200:], panic, ok)
    assert proc.returncode == 64, f"exit {proc.returncode} (expected 64)\n{proc.stderr[-2000:]}"
    assert line, f"stderr does not name {daemon.ecs_token_path}:\n{proc.stderr[-2000:]}"
    assert names_length, f"the message does not give the length ({length}): {line}"
    assert token not in proc.stderr, "the message repeats the token"
    assert not panic


def test_ecs_token_file_of_the_minimum_length_is_served(oidc_daemon):
    """The boundary of the check above: 16 characters start and authenticate."""
    daemon = oidc_daemon("sts")
    token = "Mn4-" + "p" * (MIN_ECS_TOKEN - 5) + "Z"
    assert len(token) == MIN_ECS_TOKEN
    h.write_secret(daemon.ecs_token_path, token)
    daemon.start()
    served = daemon.get("/v1/credentials/default", {"Authorization": token}).status
    refused = daemon.get("/v1/credentials/default", {"Authorization": token[:-1]}).status
    _record_state_case(f"ECS token file of {MIN_ECS_TOKEN} characters",
                       f"started; served with it: {served}; one character short: {refused}", "",
                       "panicked" in daemon.logs(), served == 200 and refused == 401)
    assert (served, refused) == (200, 401)
    daemon.stop()


def test_garbage_daemon_json_does_not_stop_a_start(oidc_daemon):
    daemon = oidc_daemon("sts")
    h.write_secret(daemon.daemon_json_path, "{not json")
    daemon.start()
    proc = daemon.cli("status", "--json")
    panic = "panicked" in daemon.logs() + proc.stderr
    ok = proc.returncode == 0 and h.parse_json_output(proc.stdout)["profiles"]["default"]["state"] == "ready"
    _record_state_case("daemon.json garbage", f"started; status exit {proc.returncode}", "", panic, ok)
    assert ok and not panic, proc.stderr
    daemon.stop()


def test_stale_temp_files_are_removed_or_rolled_forward_at_start(oidc_daemon):
    """Formerly a finding: temp files of killed atomic writes of daemon.json and
    the identity-id cache were never cleaned up. Now a start removes them; the
    refresh-token ones are rolled forward (the newest, when newer than the file:
    it holds the only live token) or removed at the next read. Set up as a kill
    between writing the rotated token's temp file and the rename would leave it:
    the file holds the rotated-away token, so only a roll-forward avoids invalid_grant."""
    daemon = oidc_daemon("cognito")
    rt = daemon.refresh_token_path()
    dead = daemon.minted_refresh_token
    r = h.post_form(f"{daemon.idp.issuer}/token", {"grant_type": "refresh_token", "refresh_token": dead,
                                                    "client_id": "daemon"})
    assert r.status == 200, f"rotating the minted token at the IdP: {r.status} {r.text[:200]}"
    live = r.json()["refresh_token"]
    assert live and live != dead
    run_dir, state_dir = daemon.runtime_dir / "credbroker", rt.parent
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = time.time()
    planted = {
        run_dir / ".daemon.json.tmp.4242.deadbeef0001": ('{"pid": 4242, "listen": "127.0.0.1:1"}', now - 50),
        state_dir / ".identity-id.tmp.4242.deadbeef0002": ("us-east-1:00000000-dead-beef-0000-000000000000", now - 50),
        state_dir / ".refresh-token.tmp.4242.deadbeef0003": ("an-older-leftover", now - 200),
        state_dir / ".refresh-token.tmp.4242.deadbeef0004": ("", now - 5),  # died before writing anything
        state_dir / ".refresh-token.tmp.4243.deadbeef0005": (live, now - 10),  # the rotation, not yet renamed
    }
    controls = {run_dir / ".unrelated.tmp.4242.cafe": "keep", state_dir / "notes.txt": "keep"}
    for path, (content, mtime) in planted.items():
        h.write_secret(path, content)
        os.utime(path, (mtime, mtime))
    for path, content in controls.items():
        h.write_secret(path, content)
    os.utime(rt, (now - 100, now - 100))

    def leftovers() -> list[str]:
        return sorted(p.name for d in (run_dir, state_dir) for p in d.iterdir()
                      if p.name.startswith((".daemon.json.tmp.", ".identity-id.tmp.", ".refresh-token.tmp.")))

    daemon.start(wait_ready=False)
    st = h.wait_for(lambda: (s := daemon.profile_status())["state"] in ("ready", "login_required") and s, 30,
                    "the first refresh")
    after_start = leftovers()
    on_disk = daemon.read_refresh_token()
    daemon.stop()
    after_stop = leftovers()
    kept = [p.name for p in controls if p.exists()]
    panic = "panicked" in daemon.logs()
    ok = (st["state"] == "ready" and not after_start and not after_stop and len(kept) == len(controls)
          and on_disk not in (dead, live))
    _record_state_case("stale temp files (daemon.json, identity-id, refresh-token) at start",
                       f"{st['state']}; left after start: {len(after_start)}, after stop: {len(after_stop)}; "
                       f"refresh token rolled forward and rotated: {on_disk not in (dead, live)}; "
                       f"unrelated files kept: {len(kept)}/{len(controls)}", "", panic, ok)
    assert st["state"] == "ready", (f"not rolled forward: {st['state']} "
                                    f"({(st.get('last_error') or {}).get('kind')})\n{h.tail(daemon.logs(), 30)}")
    assert on_disk not in (dead, live), "the refresh-token file does not hold the token of the refresh after the roll-forward"
    assert not after_start, f"temp files left after the start: {after_start}"
    assert not after_stop, f"temp files left after the stop: {after_stop}"
    assert len(kept) == len(controls), f"unrelated files were removed: kept only {kept}"
    assert not panic


def test_port_in_use_exits_69(oidc_daemon):
    daemon = oidc_daemon("sts")
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        daemon.config["server"]["listen"] = f"127.0.0.1:{port}"
        daemon.write_config()
        proc = subprocess.run([str(daemon.binary), "serve", "-c", str(daemon.config_path)], env=daemon.env,
                              capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    finally:
        holder.close()
    msg = _log_line(proc.stderr, f"127.0.0.1:{port}")
    ok = proc.returncode == 69 and bool(msg) and "panicked" not in proc.stderr
    _record_state_case("port already in use", f"exit {proc.returncode}", msg, "panicked" in proc.stderr, ok)
    assert proc.returncode == 69, f"exit {proc.returncode}\n{proc.stderr}"
    assert msg, f"stderr does not name the address:\n{proc.stderr}"


def test_group_readable_secret_files_are_warned_about(oidc_daemon):
    daemon = oidc_daemon("sts")
    rt = daemon.refresh_token_path()
    os.chmod(rt, 0o644)
    h.write_secret(daemon.ecs_token_path, "ecs-token-0123456789-abcdefghijklmnopqrstuvw")
    os.chmod(daemon.ecs_token_path, 0o640)
    daemon.start()
    logs = daemon.current_logs()
    rt_warn = _log_line(logs, "WARN", str(rt))
    ecs_warn = _log_line(logs, "WARN", str(daemon.ecs_token_path))
    # Still served (warned, not refused), and the daemon's own rewrite of the rotated token is 0600 again.
    state = daemon.profile_status()["state"]
    mode_after = h.file_mode(rt)
    ok = bool(rt_warn) and bool(ecs_warn) and "chmod 600" in rt_warn and state == "ready"
    _record_state_case("refresh-token file 0644 / ECS token 0640",
                       f"warned (not refused); served: {state}; refresh-token file after rotation: {oct(mode_after)}",
                       rt_warn, "panicked" in logs, ok)
    assert rt_warn and "chmod 600" in rt_warn, f"no WARN with the chmod for {rt}:\n{h.tail(logs, 20)}"
    assert ecs_warn, f"no WARN for the 0640 ECS token file:\n{h.tail(logs, 20)}"
    assert state == "ready"
    daemon.stop()

