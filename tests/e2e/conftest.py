"""pytest fixtures for the credbroker end-to-end scenarios (see harness.py).

moto and oidc-provider are started once per session; every test gets a reset
moto (no AWS state, empty recording) and fresh IdP grants of its own. Daemons
are function-scoped, live in the test's tmp_path and are always stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import pytest

import harness as h

# Figures of the adversarial suite → docs/security.md at the end of the session.
pytest_plugins = ["security_report"]


def pytest_configure(config: pytest.Config) -> None:
    # boto3 calls made by the harness itself must not see a developer's AWS setup.
    h.scrub_process_env()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[h.Moto]:
    with h.Moto().start() as moto:
        yield moto


@pytest.fixture
def moto(moto_server: h.Moto) -> h.Moto:
    """moto with no state and an empty, stopped recording."""
    moto_server.reset()
    return moto_server


@pytest.fixture(scope="session")
def oidc_factory() -> Iterator[Callable[..., h.OidcProvider]]:
    """``oidc_factory(id_ttl=.., rt_ttl=.., rt_grace=..)``: one provider per setting for the session."""
    started: dict[tuple[int, int, int], h.OidcProvider] = {}

    def get(id_ttl: int = 300, rt_ttl: int = 86400, rt_grace: int = 0) -> h.OidcProvider:
        key = (id_ttl, rt_ttl, rt_grace)
        if key not in started or not started[key].running:
            started[key] = h.OidcProvider(id_ttl=id_ttl, rt_ttl=rt_ttl, rt_grace=rt_grace).start()
        return started[key]

    yield get
    for provider in started.values():
        provider.terminate()


@pytest.fixture
def oidc(oidc_factory) -> h.OidcProvider:
    return oidc_factory()


@pytest.fixture
def daemon_factory(tmp_path: Path, moto: h.Moto) -> Iterator[Callable[..., h.Daemon]]:
    """``daemon_factory(config, **kw)`` → an unstarted Daemon in its own directory.

    Defaults: AWS_ENDPOINT_URL = moto, RUST_LOG=info. Every daemon is stopped
    (SIGTERM, then SIGKILL) at teardown and its log is printed, which pytest
    shows only for failing tests.
    """
    daemons: list[h.Daemon] = []

    def make(config: Mapping[str, Any] | str, **kwargs: Any) -> h.Daemon:
        kwargs.setdefault("moto_url", moto.url)
        daemon = h.Daemon(tmp_path / f"daemon{len(daemons)}", config, **kwargs)
        daemons.append(daemon)
        return daemon

    yield make
    for daemon in daemons:
        rc = daemon.terminate()
        print(f"\n--- {daemon.workdir} (exit {rc}) log tail ---\n{h.tail(daemon.logs(), 150)}")


@pytest.fixture
def oidc_daemon(moto: h.Moto, oidc_factory, daemon_factory) -> Callable[..., h.Daemon]:
    """``oidc_daemon(flow, id_ttl=300, aws={...}, **daemon_kw)`` → an unstarted Daemon
    that logs in to oidc-provider as the public client ``daemon`` with a freshly
    minted refresh token, and exchanges the id_token through ``flow``:

    - ``"cognito"``: an identity pool in moto trusting the issuer (enhanced flow);
    - ``"sts"``: AssumeRoleWithWebIdentity into h.OIDC_ROLE_ARN as h.SESSION_NAME.

    ``daemon.idp`` is the OidcProvider, ``daemon.minted_refresh_token`` the token
    written to the daemon's refresh-token file.
    """

    def make(flow: str = "cognito", *, id_ttl: int = 300, aws: Mapping[str, Any] | None = None,
             **daemon_kw: Any) -> h.Daemon:
        idp = oidc_factory(id_ttl=id_ttl)
        if flow == "cognito":
            aws_cfg: dict[str, Any] = {"flow": "cognito",
                                       "identity_pool_id": moto.create_oidc_identity_pool(idp.issuer)}
        elif flow == "sts":
            aws_cfg = {"flow": "sts", "role_arn": h.OIDC_ROLE_ARN, "session_name": h.SESSION_NAME}
        else:
            raise ValueError(flow)
        aws_cfg.update(aws or {})
        daemon = daemon_factory(h.make_config(login=h.oidc_login(idp), aws=aws_cfg), **daemon_kw)
        daemon.idp = idp
        daemon.minted_refresh_token = idp.mint("alice")
        daemon.write_refresh_token(daemon.minted_refresh_token)
        return daemon

    return make
