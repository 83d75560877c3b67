"""The README's shell blocks, run as a new user would run them.

Blocks marked ``<!-- runnable: NAME -->`` in README.md (see readme_blocks.py)
run here under ``bash -euo pipefail``, with the README text verbatim, from the
repository root (the Quick start's ``cp config/...`` is relative to the clone),
in a fresh account: a new empty HOME with no ~/.config, ~/.local or ~/.aws,
XDG_CONFIG_HOME / XDG_STATE_HOME / XDG_DATA_HOME / XDG_CACHE_HOME unset (so the
XDG defaults under HOME apply, as the README's ``~/...`` paths assume),
XDG_RUNTIME_DIR a fresh 0700 directory (what a login session gets), and no
AWS_*, BOTO_* or proxy variable (NO_PROXY covers loopback, as the harness sets
it for every child). The Quick start runs against moto and oidc-provider.

Substitutions, and nothing else is changed:

1. ``cargo install --locked --path .`` is not run (a release build takes many minutes
   here). Instead the already-built ``target/debug/credbroker`` (tests/run.sh
   builds it; CREDBROKER_BIN overrides) is symlinked as ~/.cargo/bin/credbroker,
   where ``cargo install`` puts it, and ~/.cargo/bin comes first on PATH, as
   rustup's profile puts it. The test asserts that ``credbroker`` resolves there.
2. ``aws`` is the venv's AWS CLI (tests/requirements.txt), symlinked as
   ~/.local/bin/aws, where ``pip install --user awscli`` puts it, on PATH.
3. At ``credbroker login`` the test plays the user: the fresh account has no
   display, so the command prints a device code (RFC 8628); the test opens
   its ``verification_uri_complete`` at oidc-provider, confirms the code,
   signs in and consents (idp_user.py), as a person would in a browser.
4. At the Quick start's ``# edit issuer, client_id, pool`` the test edits the
   copied ~/.config/credbroker/config.toml the way the user would: ``issuer`` =
   oidc-provider's issuer, ``client_id`` = "daemon", ``identity_pool_id`` = a
   moto identity pool that trusts that issuer. Two edits a real user does not
   need: the example's commented ``# endpoint_url = ...`` becomes
   ``endpoint_url = <moto>`` (the stand-in for AWS), and ``# listen = ...``
   becomes ``listen = "127.0.0.1:0"`` so that a real daemon on 9911 can never
   collide with the test (``credbroker env`` and ``status`` read the bound
   port from daemon.json).
5. ``credbroker serve`` runs in the background with the same environment (a
   user runs it in its own terminal, or as a service); the test waits for its
   ``listening`` log line and ``/healthz`` = 200 (it is not ready before the
   sign-in: ``login_required``), then runs the lines after it in a new shell
   ("in the shell that runs your tools"). It is stopped with SIGTERM and must
   exit 0.
6. That tools shell also has AWS_ENDPOINT_URL_STS = moto and AWS_DEFAULT_REGION
   = us-east-1 (a custom endpoint needs a signing region; the real global STS
   endpoint does not) and AWS_EC2_METADATA_DISABLED=true, so that a broken
   README can never make the CLI probe 169.254.169.254 from this machine (the
   ECS variables that ``credbroker env`` prints take precedence over IMDS
   anyway, so this does not change the passing path).

The status block runs after the Quick start, in the same kind of tools shell,
while the daemon still runs. Each Quick start run is done with umask 022 and with umask 002 (the default for
users with a private group on many distributions): the state directory the
README creates must not be writable by group or others either way.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import tomllib
from pathlib import Path
from typing import Mapping

import pytest

import harness as h
import readme_blocks

README = h.REPO / "README.md"
EXAMPLE_CONFIG = h.REPO / "config" / "credbroker.example.toml"

# Every block marked runnable in README.md, and the test that runs it. A marker
# that is removed, renamed or added without a test here fails
# test_marked_blocks_are_the_expected_ones.
EXPECTED_RUNNABLE = {
    "quickstart": "test_quickstart",
    "status": "test_quickstart",
}


def _bash(script: str, env: Mapping[str, str], *, umask: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run README text verbatim in a fresh non-interactive bash from the repo root."""
    prologue = f"set -euo pipefail\numask {umask}\n"
    return subprocess.run(["bash", "-c", prologue + script], env=dict(env), cwd=str(h.REPO),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _ok(proc: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, (f"README {what} failed (exit {proc.returncode})\n"
                                  f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}")
    return proc


def _fresh_account(root: Path) -> dict[str, str]:
    """The environment of a brand-new login (see the module docstring)."""
    home = root / "home"
    home.mkdir(mode=0o755)
    runtime = root / "run-user"
    runtime.mkdir(mode=0o700)
    cargo_bin = home / ".cargo" / "bin"
    local_bin = home / ".local" / "bin"
    # Substitution 1: what `cargo install --locked --path .` would have left in ~/.cargo/bin.
    binary = h.credbroker_bin()
    if not binary.exists():
        pytest.fail(f"credbroker binary not found at {binary}: build it with `cargo build --locked --bins`")
    cargo_bin.mkdir(parents=True)
    (cargo_bin / "credbroker").symlink_to(binary.resolve())
    # Substitution 2: the AWS CLI where `pip install --user awscli` puts it.
    local_bin.mkdir(parents=True)
    (local_bin / "aws").symlink_to(h.VENV_BIN / "aws")
    # ~/.local/{bin,} exist now, as on most accounts; ~/.local/state does not.
    env = h.clean_env(HOME=home, XDG_RUNTIME_DIR=runtime)
    for key in list(env):
        if key.startswith(("AWS_", "BOTO_", "XDG_")) and key != "XDG_RUNTIME_DIR":
            del env[key]
    env["PATH"] = f"{cargo_bin}:{local_bin}:{env['PATH']}"
    return env


def _set_key(text: str, key: str, value: str, *, commented: bool = False) -> str:
    """Replace the one ``key = ...`` line of the example (``# key = ...`` when
    ``commented``) by ``key = value``, as an editor would; the line must exist once."""
    prefix = r"#\s*" if commented else ""
    rx = re.compile(rf"^{prefix}{re.escape(key)}\s*=.*$", re.M)
    hits = rx.findall(text)
    assert len(hits) == 1, (f"{EXAMPLE_CONFIG.name}: expected one {'commented ' if commented else ''}"
                            f"`{key} = ...` line to edit, found {len(hits)}: {hits}")
    return rx.sub(lambda _: f"{key} = {json.dumps(value)}", text)


def _wait_listening(serve: subprocess.Popen, log: Path) -> str:
    def logs() -> str:
        return h.strip_ansi(log.read_text("utf-8", "replace")) if log.exists() else ""

    def listening() -> str | None:
        if serve.poll() is not None:
            raise AssertionError(f"`credbroker serve` exited {serve.returncode}\n{h.tail(logs(), 60)}")
        m = h.LISTENING_RE.search(logs())
        return m.group(1) if m else None

    addr = h.wait_for(listening, 30, "`credbroker serve` to log `listening addr=`",
                      on_timeout=lambda: h.tail(logs(), 60))
    assert re.fullmatch(r"127\.0\.0\.1:\d+", addr), f"serve listens on {addr}"

    def ready() -> bool:
        if serve.poll() is not None:
            raise AssertionError(f"`credbroker serve` exited {serve.returncode}\n{h.tail(logs(), 60)}")
        try:
            return h.http_request("GET", f"http://{addr}/healthz", timeout=2).status == 200
        except OSError:
            return False

    h.wait_for(ready, 30, "/healthz == 200", interval=0.25, on_timeout=lambda: h.tail(logs(), 60))
    return addr


def _bash_signing_in(script: str, env: Mapping[str, str], *, umask: str,
                     timeout: float = 90) -> subprocess.CompletedProcess:
    """``_bash``, playing the user when ``credbroker login`` prints its device code."""
    import threading

    from idp_user import IdpUser

    proc = subprocess.Popen(["bash", "-c", f"set -euo pipefail\numask {umask}\n{script}"], env=dict(env),
                            cwd=str(h.REPO), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    err: list[str] = []
    approved: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            err.append(line)
            m = re.search(r"\(or open (\S+) ,", line)
            if m and not approved:
                approved.append(m.group(1))
                IdpUser("readme-user").approve_device(m.group(1))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    # stdout here, stderr in the reader (communicate() would read both).
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        assert proc.stdout is not None
        out = proc.stdout.read()
        proc.wait()
    finally:
        timer.cancel()
    reader.join(timeout=10)
    assert approved, "credbroker login never printed a device code:\n" + "".join(err)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "".join(err))


def test_marked_blocks_are_the_expected_ones():
    """Exactly the expected README blocks are marked runnable, each a shell block
    right after its marker, so that deleting a marker cannot skip a test."""
    marked = readme_blocks.runnable(README)
    assert set(marked) == set(EXPECTED_RUNNABLE), (
        f"README.md marks {sorted(marked)} as runnable; tests/e2e/test_readme.py expects "
        f"{sorted(EXPECTED_RUNNABLE)} (a `<!-- runnable: NAME -->` line right before the ```sh fence)")
    # The Quick start still has the lines the test substitutes or pauses at.
    qs = marked["quickstart"]
    for pattern in (r"^cargo install\b", r"\bcp config/credbroker\.example\.toml\b",
                    r"^credbroker serve\b", r"^credbroker login\b", r"^aws sts get-caller-identity\b"):
        readme_blocks.split_at(qs, pattern)


@pytest.mark.parametrize("umask", ["022", "002"])
def test_quickstart(umask: str, tmp_path: Path, moto: h.Moto, oidc: h.OidcProvider):
    """The README's Quick start, then its status block, in a fresh account.

    Asserts: every Quick start line exits 0 (``bash -euo pipefail``);
    ``credbroker check-config`` accepts the edited example config;
    ``credbroker serve`` starts on it; ``credbroker login`` signs in and the
    refresh token lands in ~/.local/state/credbroker/default/refresh-token with
    mode 0600 in a state directory that is the user's and that group and others
    cannot write, never printed; ``eval "$(credbroker env)"``
    exports the ECS variables; ``aws sts get-caller-identity`` prints moto's
    identity using credentials that came from the daemon's ECS endpoint
    (botocore reports ``container-role``); ``credbroker status`` and
    ``status --json`` succeed and report the default profile; the daemon exits
    0 on SIGTERM.
    """
    blocks = readme_blocks.runnable(README)
    missing = {"quickstart", "status"} - set(blocks)
    if missing:
        pytest.fail(f"README.md has no block marked runnable: {', '.join(sorted(missing))}")
    qs, status_block = blocks["quickstart"], blocks["status"]
    env = _fresh_account(tmp_path)
    home = Path(env["HOME"])
    pool_id = moto.create_oidc_identity_pool(oidc.issuer)

    which = _ok(_bash("command -v credbroker; command -v aws", env, umask=umask), "PATH check")
    assert which.stdout.split() == [str(home / ".cargo/bin/credbroker"), str(home / ".local/bin/aws")], \
        f"credbroker/aws must resolve to the fresh account's copies: {which.stdout}"

    # Substitution 1: the `cargo install` line is dropped (the symlink above replaces it).
    where = f"README Quick start (line {qs.line})"
    head, _cargo_install, rest = readme_blocks.split_at(qs, r"^cargo install\b")
    before_serve, serve_line, tools_part = readme_blocks.split_lines(head + rest, r"^credbroker serve\b", where)
    copy_head, cp_line, setup_tail = readme_blocks.split_lines(
        before_serve, r"\bcp config/credbroker\.example\.toml\b", where)

    # Up to and including the `cp` of the example config.
    _ok(_bash(copy_head + cp_line + "\n", env, umask=umask), "Quick start (up to the cp of the example config)")
    config = home / ".config" / "credbroker" / "config.toml"
    assert config.read_text() == EXAMPLE_CONFIG.read_text()

    # Substitution 4: "# edit issuer, client_id, pool".
    text = config.read_text()
    text = _set_key(text, "issuer", oidc.issuer)
    text = _set_key(text, "client_id", "daemon")
    text = _set_key(text, "identity_pool_id", pool_id)
    text = _set_key(text, "endpoint_url", moto.url, commented=True)
    text = _set_key(text, "listen", "127.0.0.1:0", commented=True)
    config.write_text(text)
    parsed = tomllib.loads(text)
    profile = parsed["profiles"]["default"]
    assert (profile["login"]["issuer"], profile["login"]["client_id"], profile["aws"]["identity_pool_id"],
            profile["endpoint_url"], parsed["server"]["listen"]) == \
        (oidc.issuer, "daemon", pool_id, moto.url, "127.0.0.1:0"), "the edits must land in the right tables"

    # The rest up to `credbroker serve`: check-config.
    setup = _ok(_bash(setup_tail, env, umask=umask), "Quick start (check-config)")
    assert oidc.issuer in setup.stdout and pool_id in setup.stdout, \
        f"check-config must print the resolved config:\n{setup.stdout}"

    # Substitution 5: `credbroker serve` in the background.
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        serve = subprocess.Popen(["bash", "-c", f"umask {umask}\n{serve_line}"], env=env, cwd=str(h.REPO),
                                 stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
    try:
        _wait_listening(serve, log)

        # Substitution 6: the tools shell talks to moto's STS.
        tools_env = {**env, "AWS_ENDPOINT_URL_STS": moto.url, "AWS_DEFAULT_REGION": h.REGION,
                     "AWS_EC2_METADATA_DISABLED": "true"}
        exports_file = tmp_path / "exports.json"
        # After the README's lines: record what they exported (eval "$(...)" hides a failing
        # command substitution, so the exports are checked rather than trusted).
        probe = (f'\n"{h.VENV_BIN / "python"}" -c \'import json, os, sys; '
                 f'json.dump({{k: v for k, v in os.environ.items() if k.startswith("AWS_")}}, '
                 f'open(sys.argv[1], "w"))\' "{exports_file}"\n')
        tools = _ok(_bash_signing_in(tools_part + probe, tools_env, umask=umask),
                    "Quick start (login, env, aws)")
        assert "Signed in as readme-user" in tools.stderr, tools.stderr
        state_dir = home / ".local" / "state" / "credbroker" / "default"
        token_file = state_dir / "refresh-token"
        refresh_token = token_file.read_text()
        assert refresh_token and h.file_mode(token_file) == 0o600, \
            f"{token_file} mode {oct(h.file_mode(token_file))}"
        # The daemon refuses a state directory that is not the user's or that group/others can write.
        st = state_dir.stat()
        assert st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH), \
            f"{state_dir} (mode {oct(stat.S_IMODE(st.st_mode))}, uid {st.st_uid}) must be the user's " \
            f"and writable by nobody else"
        assert refresh_token not in tools.stdout + tools.stderr + setup.stdout, "a command printed the refresh token"
        identity = h.parse_json_output(tools.stdout)
        assert identity["Arn"] == h.MOTO_DEFAULT_ARN and identity["Account"] == h.ACCOUNT_ID, identity
        exported = json.loads(exports_file.read_text())
        runtime = Path(env["XDG_RUNTIME_DIR"])
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1/credentials/default",
                            exported.get("AWS_CONTAINER_CREDENTIALS_FULL_URI", "")), exported
        assert exported.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") == str(runtime / "credbroker" / "ecs-token"), \
            exported
        # The CLI's credentials came from the daemon (the only source in this account).
        creds = h.boto3_credentials({**tools_env, **exported})
        assert creds["method"] == "container-role", creds
        assert creds["access_key_id"] == "TESTACCESSKEY12345", creds  # moto's Cognito credentials

        # The status block, in the same kind of shell.
        status = _ok(_bash(status_block.body, tools_env, umask=umask), "status block")
        human, _, raw = status.stdout.partition("\n{")
        assert "default" in human, f"`credbroker status` must list the default profile:\n{status.stdout}"
        doc, _ = json.JSONDecoder().raw_decode("{" + raw)
        assert "default" in doc.get("profiles", {}), doc
        assert refresh_token not in status.stdout + status.stderr
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGTERM)
        try:
            rc = serve.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()
            rc = None
        print(f"--- credbroker serve (exit {rc}) ---\n{h.tail(h.strip_ansi(log.read_text('utf-8', 'replace')), 80)}")
    assert rc == 0, f"`credbroker serve` exited {rc} after SIGTERM (expected 0)"
