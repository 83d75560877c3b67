"""Issue 3: the SDK compatibility matrix. Real, unmodified AWS SDK clients (botocore and
the AWS CLI v1, JavaScript v3, Rust, Go v2, Ruby) run as subprocesses against the real
credbroker binary in every serving mode; long-running clients ride through credential
rotations; negative controls prove the suite can fail. The definitions live in compat.py;
the module's teardown writes docs/compatibility.md (or, for a partial selection,
target/compat/compatibility.partial.md) and prints the wall time.

Run just this: ``.venv/bin/python -m pytest tests/e2e -k compat``.

The long-running clients start in the background when the module's first test sets up
(if test_compat_long_running_clients is selected) and are collected by that test, so
they overlap with the matrix cells instead of adding ~2 minutes.
"""

from __future__ import annotations

import re
import sys
import time
from typing import Iterator

import pytest

import compat as c
import harness as h
from broken_imds import BrokenImds

CELLS = c.cells()
NEG_CASES = c.neg_cases()


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]


def _excerpt(r: c.Run, m: re.Match) -> str:
    """The client's own words for a failure: its JSON "error", else the matching line."""
    out = r.out or {}
    first = m.group(0).splitlines()[0]
    if out.get("error"):
        text = str(out["error"])
    else:
        text = next((l for l in r.text.splitlines() if first in l), first).strip()
    at = text.find(first)
    if at > 80:  # keep the part that matched in view
        text = "..." + text[at - 60:]
    text = text.replace("`", "'")
    return text if len(text) <= 200 else text[:197] + "..."


@pytest.fixture(scope="module")
def _clock() -> float:
    return time.monotonic()


@pytest.fixture(scope="module")
def ctx(request: pytest.FixtureRequest, _clock: float, moto_server: h.Moto, oidc_factory,
        tmp_path_factory) -> Iterator[c.Context]:
    moto_server.reset()  # nothing below resets it again: the daemons' STS state must survive
    tmp = tmp_path_factory.mktemp("compat")
    context = c.Context(moto_server.url, c.Daemons(moto_server.url, oidc_factory(), tmp), tmp)
    this = sys.modules[__name__]
    selected = [i for i in request.session.items if getattr(i, "module", None) is this]
    if any(getattr(i, "originalname", "") == "test_compat_long_running_clients" for i in selected):
        context.longrun = c.LongRun(context).start()
    yield context

    if context.longrun is not None:
        context.longrun.stop()
    problems = context.daemons.stop_all()
    complete = (all(k in c.RESULTS["cells"] for k in ((r.id, col.id) for r, col in CELLS))
                and all((v, n.id) in c.RESULTS["negative"] for v, n in NEG_CASES)
                and all(loop.id in c.RESULTS["loops"] for loop in c.LOOPS))
    wall = time.monotonic() - _clock
    path = c.write_table(c.TABLE_PATH if complete else c.PARTIAL_TABLE_PATH, wall_seconds=wall,
                         complete=complete, command=".venv/bin/python -m pytest tests/e2e -k compat")
    message = f"compatibility matrix: {wall:.0f} s wall time; table written to {path.relative_to(c.REPO)}"
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capman = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capman is not None:
        with capman.global_and_fixture_disabled():
            reporter.write_line("")
            reporter.write_line(message)
    else:
        print(message)
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------
# The matrix
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("row_id,col_id", [(r.id, col.id) for r, col in CELLS],
                         ids=[f"{r.id}--{col.id}" for r, col in CELLS])
def test_compat_cell(ctx: c.Context, row_id: str, col_id: str):
    row, col = c.ROW_BY_ID[row_id], c.COL_BY_ID[col_id]
    key = (row_id, col_id)
    special = c.SPECIAL.get(key)
    try:
        if special is None:
            reason = c.missing(row.client)
            if reason:
                raise AssertionError(f"{row.client} client is not installed: {reason}")
            detail = c.check_cell(ctx, row, col)
        else:
            detail = special.verify(ctx, row, col) if special.verify else "not re-checked"
    except BaseException as e:
        c.RESULTS["cells"][key] = {"status": "FAIL", "detail": _first_line(e)}
        raise
    if special is not None:
        c.RESULTS["cells"][key] = {"status": special.status, "detail": special.reason, "checked": detail}
        pytest.skip(f"{special.status}: {special.reason} [{detail}]")
    c.RESULTS["cells"][key] = {"status": "pass", "detail": detail}


# ---------------------------------------------------------------------------
# Negative controls
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("variant,client_id", [(v, n.id) for v, n in NEG_CASES],
                         ids=[f"{v}--{n.id}" for v, n in NEG_CASES])
def test_compat_negative_control(ctx: c.Context, variant: str, client_id: str):
    """The client against tests/e2e/broken_imds.py: it must fail exactly where
    protocol.md 4.2 says it does (and work everywhere else, including the baseline,
    which shows the stand-in is otherwise faithful)."""
    nc = c.NEG_CLIENT_BY_ID[client_id]
    expect = c.neg_expect(variant, nc)
    key = (variant, client_id)
    observed = ""
    try:
        reason = c.missing(nc.client)
        if reason:
            raise AssertionError(f"{nc.client} client is not installed: {reason}")
        creds = ctx.daemons.creds("v2")  # real credentials, so a client that accepts them can call STS
        with BrokenImds(variant, creds) as srv:
            if nc.family == c.IMDS:
                env = h.clean_env(STS_ENDPOINT=ctx.moto_url, AWS_EC2_METADATA_SERVICE_ENDPOINT=srv.url + "/")
            else:
                env = h.clean_env(STS_ENDPOINT=ctx.moto_url, AWS_EC2_METADATA_DISABLED="true",
                                  AWS_CONTAINER_CREDENTIALS_FULL_URI=srv.url + "/v1/credentials",
                                  AWS_CONTAINER_AUTHORIZATION_TOKEN=srv.ecs_token)
            r = c.run(c.argv(nc.client, *nc.args), env)
            requests = srv.summary()
            seen = srv.seen()
        if variant == "baseline" and nc.family == c.IMDS:
            c.RESULTS["checks"].setdefault("imds_paths", {})[nc.id] = c.first_credentials_path(seen)
        c.note_version(nc.client, r.out)
        where = f"{nc.id} against broken_imds `{variant}`"
        assert seen, f"{where}: the client never contacted the stand-in\n{r.report()}"
        if expect.fail:
            assert r.rc != 0, (f"{where} should FAIL ({expect.why}) but succeeded: the matrix would not "
                               f"detect this mistake\nrequests: {requests}\n{r.report()}")
            m = re.search(expect.pattern, r.text, re.S)
            assert m, (f"{where} failed, but not as expected ({expect.why}; pattern {expect.pattern!r})\n"
                       f"requests: {requests}\n{r.report()}")
            observed = _excerpt(r, m)
        else:
            c.check_get(r, client=nc.client, want_key=lambda: creds["AccessKeyId"], source=None)
        if expect.tokenless_get is not None:
            tokenless = [s for s in seen if s.method == "GET" and not s.imds_token]
            assert bool(tokenless) == expect.tokenless_get, (
                f"{where}: expected {'some' if expect.tokenless_get else 'no'} token-less GETs "
                f"({expect.why}); requests: {requests}")
    except BaseException as e:
        c.RESULTS["negative"][key] = {"status": "FAIL", "detail": _first_line(e)}
        raise
    c.RESULTS["negative"][key] = {"status": "pass", "detail": expect.why, "observed": observed}


# ---------------------------------------------------------------------------
# Long-running clients (started by the ctx fixture; collected here)
# ---------------------------------------------------------------------------

def test_compat_long_running_clients(ctx: c.Context):
    """Every SDK at once, one process each, GetCallerIdentity once per second for
    LOOP_SECONDS against a daemon whose credentials live 60 s (a rotation every ~30 s):
    no call may fail, every key used must be one the daemon served, and each client must
    have followed the rotations (at least Loop.min_keys distinct keys; with Loop.consecutive,
    in the daemon's order without skipping one)."""
    lr = ctx.longrun
    assert lr is not None, "the long-running clients were not started by the ctx fixture"
    results = lr.wait()
    daemon = ctx.daemons.get("short")
    served = [k for _, k in lr.served]
    refreshes = daemon.profile_status()["refreshes"]
    c.RESULTS["checks"]["served_keys"] = {"count": len(served), "refreshes": refreshes,
                                          "timeline": [(round(t), k[-4:]) for t, k in lr.served]}
    problems = []
    for loop in c.LOOPS:
        res = results.get(loop.id) or {}
        out = res.get("out") or {}
        try:
            if loop.id in lr.skipped:
                raise AssertionError(f"{loop.client} client is not installed: {lr.skipped[loop.id]}")
            c.note_version(loop.client, out)
            where = f"long-running {loop.label}"
            report = res.get("report", "")
            assert out, f"{where}: no result line\n{report}"
            assert out.get("failures") == 0 and res.get("rc") == 0, (
                f"{where}: {out.get('failures')} of {out.get('calls')} calls failed: {out.get('errors')}\n{report}")
            assert out.get("calls", 0) >= lr.seconds * 0.75, (
                f"{where}: only {out.get('calls')} calls in {lr.seconds} s\n{report}")
            assert set(out.get("arns") or []) == {c.EXPECTED_ARN}, f"{where}: ARNs {out.get('arns')}\n{report}"
            unknown = set(out.get("keys") or []) - set(served)
            assert not unknown, f"{where}: used keys the daemon never served: {unknown} (served {served})"
            assert out.get("distinct_keys", 0) >= loop.min_keys, (
                f"{where}: saw {out.get('distinct_keys')} distinct keys, expected at least {loop.min_keys} "
                f"(the daemon served {len(served)})\n{report}")
            if loop.consecutive:
                at = [served.index(k) for k in out.get("keys") or []]
                assert at == list(range(at[0], at[0] + len(at))), (
                    f"{where}: its keys are not consecutive in the daemon's sequence (positions {at} of "
                    f"{len(served)} served): it skipped a rotation\n{report}")
        except AssertionError as e:
            c.RESULTS["loops"][loop.id] = {"status": "FAIL", "detail": _first_line(e), "out": out}
            problems.append(str(e))
            continue
        c.RESULTS["loops"][loop.id] = {"status": "pass", "detail": "", "out": out}
    assert not lr.watch_errors, f"the daemon's ECS endpoint failed while the loops ran: {lr.watch_errors}"
    assert len(served) >= c.MIN_ROTATIONS + 1, (
        f"the daemon served only {len(served)} distinct keys in {lr.seconds} s; expected ≥{c.MIN_ROTATIONS + 1} "
        f"with {c.LOOP_DURATION} credentials\n{h.tail(daemon.logs(), 40)}")
    assert not problems, "\n\n".join(problems)


# ---------------------------------------------------------------------------
# After everything: the daemons' logs hold no secret they handled
# ---------------------------------------------------------------------------

def test_compat_daemon_logs_leak_no_secrets(ctx: c.Context):
    """ECS tokens (including the wrong one the rotation cells presented), refresh tokens,
    secret keys and session tokens seen during the matrix must not appear in any log."""
    daemons = ctx.daemons.started()
    assert daemons, "no daemon ran"
    for kind in daemons:
        ctx.daemons.creds(kind)
    texts = {f"daemon {kind} log": d.logs() for kind, d in daemons.items()}
    leaks = ctx.daemons.secrets.leaks(texts)
    count = sum(len(v) for v in ctx.daemons.secrets.values.values())
    c.RESULTS["checks"]["secrets"] = {
        "status": "FAIL" if leaks else "pass",
        "detail": (f"The logs of all {len(daemons)} daemons were scanned for the {count} secret values they "
                   "handled (ECS tokens including the wrong one presented by the rotation cells, refresh tokens, "
                   "secret keys, session tokens): " + ("**LEAKED**: " + "; ".join(leaks) if leaks else "none found."))}
    assert not leaks, "\n".join(leaks)
