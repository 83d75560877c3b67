"""Desktop notification when a sign-in is needed (issue 9): the daemon (built
with the default `desktop-notify` feature) on a private session bus, with
`dbus-monitor` recording every call to org.freedesktop.Notifications. One
notification per transition into `login_required`, naming the command; none
while the profile stays there, none with `server.desktop_notifications =
false`, and never a browser.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

import harness as h


class Monitor:
    """dbus-monitor on the Notifications interface, its output in a file."""

    def __init__(self, bus: h.SessionBus, path: Path):
        self.path = path
        self.out = open(path, "w")
        bus.spawn(["dbus-monitor", "--session", "interface='org.freedesktop.Notifications'"],
                  stdout=self.out, stderr=subprocess.STDOUT)
        # dbus-monitor becomes a monitor (and says so with NameAcquired/Lost).
        h.wait_for(lambda: "NameLost" in path.read_text(), 10, "dbus-monitor to start")

    def notifications(self) -> list[str]:
        """The string arguments of each Notify call so far."""
        self.out.flush()
        calls = re.split(r"^method call ", self.path.read_text(), flags=re.M)[1:]
        return ["\n".join(re.findall(r'^\s+string "(.*)"$', c, re.M)) for c in calls if "member=Notify" in c]


@pytest.fixture
def bus(tmp_path: Path):
    b = h.SessionBus(tmp_path)
    yield b
    b.stop()


def _failing_daemon(moto, oidc, daemon_factory, bus: h.SessionBus, **server) -> h.Daemon:
    cfg = h.make_config(login=h.oidc_login(oidc),
                        aws={"flow": "sts", "role_arn": h.OIDC_ROLE_ARN, "session_name": h.SESSION_NAME},
                        server=server or None)
    d = daemon_factory(cfg, extra_env={"DBUS_SESSION_BUS_ADDRESS": bus.address})
    d.write_refresh_token("a-token-the-idp-never-issued")
    return d


def test_one_notification_per_transition_into_login_required(moto, oidc, daemon_factory, bus, tmp_path):
    mon = Monitor(bus, tmp_path / "monitor.txt")
    d = _failing_daemon(moto, oidc, daemon_factory, bus)
    d.start(wait_ready=False)
    d.wait_state("login_required", 15)
    got = h.wait_for(lambda: mon.notifications() or None, 10, "a Notify call")
    assert len(got) == 1, got
    assert "credbroker" in got[0] and "sign-in needed" in got[0], got
    assert "credbroker login --profile default" in got[0], got
    assert "a-token-the-idp-never-issued" not in mon.path.read_text()
    # Staying in login_required (another failed token, really tried) does not repeat it...
    failures = d.profile_status()["failures"]
    d.write_refresh_token("another-token-the-idp-never-issued")
    h.wait_for(lambda: d.profile_status()["failures"] > failures or None, 10, "the new token to be tried")
    time.sleep(2)
    assert d.profile_status()["state"] == "login_required"
    assert len(mon.notifications()) == 1, mon.notifications()
    # A sign-in ends it; a daemon started later on a dead token notifies again.
    d.write_refresh_token(oidc.mint("alice"))
    d.wait_state("ready", 15)
    d.stop()
    d.write_refresh_token("yet-another-dead-token")
    d.start(wait_ready=False)
    d.wait_state("login_required", 15)
    h.wait_for(lambda: len(mon.notifications()) == 2 or None, 10, "the second Notify call")


def test_notifications_can_be_turned_off(moto, oidc, daemon_factory, bus, tmp_path):
    mon = Monitor(bus, tmp_path / "monitor.txt")
    d = _failing_daemon(moto, oidc, daemon_factory, bus, desktop_notifications=False)
    d.start(wait_ready=False)
    d.wait_state("login_required", 15)
    time.sleep(2)
    assert mon.notifications() == []
