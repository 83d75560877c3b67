"""A person at the identity provider's pages, played over plain HTTP.

Drives oidc-provider's development interactions (testbed.md §3.1) the way a
browser would: a cookie jar, redirects followed by hand, hidden form fields
copied. Used by the sign-in tests and by the demo, which prints each step
as a person would see it.

* ``approve_device(uri)`` opens ``verification_uri_complete``, confirms the
  code, signs in and consents (or aborts, for the access_denied path).
* ``browser_sign_in(auth_url)`` follows an authorization request through sign-in
  and consent and returns the final redirect (the loopback callback URL with
  ``code`` and ``state``) without fetching it: the caller delivers it.
"""

from __future__ import annotations

import html
import http.cookiejar
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Callable

FORM_RE = re.compile(r"<form\b([^>]*)>(.*?)</form>", re.S | re.I)
ATTR_RE = re.compile(r'(\w[\w-]*)="([^"]*)"')
HIDDEN_RE = re.compile(r"<input\b[^>]*type=\"hidden\"[^>]*>", re.I)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # noqa: D401 - urllib hook
        return None


class IdpUser:
    """One person with one browser session."""

    def __init__(self, login: str = "alice", say: Callable[[str], None] | None = None):
        self.login = login
        self.say = say or (lambda _s: None)
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar),
            _NoRedirect(),
            urllib.request.ProxyHandler({}),
        )

    def _open(self, url: str, form: dict[str, str] | None = None) -> tuple[int, str, str]:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        req = urllib.request.Request(url, data=data)
        try:
            with self.opener.open(req, timeout=10) as r:
                return r.status, r.headers.get("Location", ""), r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("Location", ""), e.read().decode("utf-8", "replace")

    @staticmethod
    def _forms(page: str) -> list[tuple[dict[str, str], dict[str, str], str]]:
        out = []
        for attrs, body in FORM_RE.findall(page):
            a = {k.lower(): html.unescape(v) for k, v in ATTR_RE.findall(attrs)}
            hidden = {}
            for tag in HIDDEN_RE.findall(body):
                t = {k.lower(): html.unescape(v) for k, v in ATTR_RE.findall(tag)}
                if "name" in t:
                    hidden[t["name"]] = t.get("value", "")
            out.append((a, hidden, body))
        return out

    def _walk(self, url: str, stop: Callable[[str], bool], *, abort: bool = False,
              max_steps: int = 20) -> str:
        """Follow pages from ``url``: redirects, the device confirmation, the
        login form, the consent form. Returns the first redirect target for
        which ``stop`` is true, or the final page's text."""
        form: dict[str, str] | None = None
        aborted = False
        for _ in range(max_steps):
            status, location, page = self._open(url, form)
            form = None
            if status in (301, 302, 303, 307, 308) and location:
                target = urllib.parse.urljoin(url, location)
                if stop(target):
                    return target
                url = target
                continue
            forms = self._forms(page)
            if not forms or aborted:
                return page
            attrs, hidden, body = forms[0]
            action = urllib.parse.urljoin(url, attrs.get("action", url))
            prompt = hidden.get("prompt")
            if prompt == "login":
                if abort:
                    uid_abort = action.rstrip("/") + "/abort"
                    self.say(f"[at the IdP] {self.login} clicks Cancel on the sign-in page")
                    url, form = uid_abort, None
                    continue
                self.say(f"[at the IdP] signs in as {self.login}")
                form = {**hidden, "login": self.login, "password": "any password"}
            elif prompt == "consent":
                self.say("[at the IdP] allows access (consent)")
                form = dict(hidden)
            elif "forms[0].submit()" in page:
                form = dict(hidden)  # a page that submits itself in a browser
            elif "user_code" in hidden or "user_code" in body:
                if abort:
                    self.say("[at the IdP] aborts the device sign-in")
                    form = {**hidden, "abort": "yes"}
                    aborted = True
                else:
                    self.say(f"[at the IdP] confirms the code {hidden.get('user_code', '')}")
                    form = {**hidden, "confirm": "yes"}
            else:
                form = dict(hidden)
            url = action
        raise RuntimeError(f"the IdP pages did not finish in {max_steps} steps (last: {url})")

    def approve_device(self, uri: str, *, abort: bool = False) -> str:
        """Approve (or abort) a device sign-in; the final page's text."""
        self.say(f"[at the IdP] opens {uri}")
        return self._walk(uri, lambda _t: False, abort=abort)

    def browser_sign_in(self, auth_url: str, redirect_prefix: str) -> str:
        """Follow an authorization request to the redirect back to us."""
        self.say("[in the browser] opens the sign-in URL")
        got = self._walk(auth_url, lambda t: t.startswith(redirect_prefix))
        if not got.startswith(redirect_prefix):
            raise RuntimeError(f"the IdP never redirected back; last page: {got[:300]}")
        return got
