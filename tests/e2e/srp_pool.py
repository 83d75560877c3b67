"""The server side of Cognito's ``USER_SRP_AUTH``, in front of moto.

moto answers ``USER_SRP_AUTH`` with made-up challenge values and accepts any
``PASSWORD_CLAIM_SIGNATURE`` (testbed.md), so it cannot tell a right SRP
client from a wrong one. This stand-in runs the server half of Cognito's
SRP-6a for the two calls of that sign-in — ``InitiateAuth`` (SRP_A in; SALT,
SRP_B, SECRET_BLOCK out) and ``RespondToAuthChallenge`` (the signature
checked) — with the hashing, padding, ``u`` and HKDF of the maintained
``pycognito`` package (the client half that real Cognito accepts), and hands
every other call, and the tokens of a verified sign-in, to moto. A test
points only the sign-in at it (``AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER``).

It checks itself: ``pycognito``'s own client must sign in through it
(test_srp.py), so a pass for credbroker means the two SRP clients agree.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import secrets
from typing import Any

from pycognito.aws_srp import (G_HEX, N_HEX, calculate_u, compute_hkdf, get_random, hash_sha256,
                               hex_hash, hex_to_long, long_to_hex, pad_hex)

import harness as h

BIG_N = hex_to_long(N_HEX)
G = hex_to_long(G_HEX)
K = hex_to_long(hex_hash("00" + N_HEX + "0" + G_HEX))
TARGET = "AWSCognitoIdentityProviderService."
CLAIM_AGE = datetime.timedelta(minutes=5)


class SrpPool:
    """Cognito's SRP server for one moto user pool whose users' passwords
    it knows (as Cognito knows their verifiers)."""

    def __init__(self, idp_client: Any, pool_id: str, passwords: dict[str, str]):
        self.idp = idp_client
        self.pool_id = pool_id
        self.pool_name = pool_id.split("_", 1)[1]
        self.passwords = passwords
        self.sessions: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        pool = self

        class Handler(h.QuietHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}")
                op = self.headers.get("X-Amz-Target", "").removeprefix(TARGET)
                pool.calls.append((op, body))
                status, out = pool.handle(op, body)
                data = json.dumps(out).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._http = h.LoopbackServer(Handler)
        self.url = self._http.url

    def stop(self) -> None:
        self._http.stop()

    @staticmethod
    def _error(kind: str, message: str) -> tuple[int, dict[str, str]]:
        return 400, {"__type": kind, "message": message}

    def handle(self, op: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if op == "InitiateAuth" and body.get("AuthFlow") == "USER_SRP_AUTH":
            return self._initiate(body)
        if op == "RespondToAuthChallenge" and body.get("ChallengeName") == "PASSWORD_VERIFIER":
            return self._verify(body)
        return self._error("InvalidParameterException", f"the SRP stand-in does not serve {op}")

    def _x(self, user: str, salt_hex: str) -> int:
        digest = hash_sha256(f"{self.pool_name}{user}:{self.passwords[user]}".encode())
        return hex_to_long(hex_hash(pad_hex(salt_hex) + digest))

    def _initiate(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        params = body.get("AuthParameters", {})
        user = params.get("USERNAME", "")
        big_a = hex_to_long(params.get("SRP_A", "0") or "0")
        if "PASSWORD" in params:
            return self._error("InvalidParameterException", "USER_SRP_AUTH takes no PASSWORD")
        if big_a % BIG_N == 0:
            return self._error("InvalidParameterException", "SRP_A is invalid")
        if user not in self.passwords:
            return self._error("UserNotFoundException", "User does not exist.")
        salt_hex = pad_hex(get_random(16))
        v = pow(G, self._x(user, salt_hex), BIG_N)
        b = get_random(128) % BIG_N
        big_b = (K * v + pow(G, b, BIG_N)) % BIG_N
        secret_block = base64.standard_b64encode(secrets.token_bytes(64)).decode()
        # As at Cognito, no Session: the secret block names the challenge.
        self.sessions[secret_block] = {"user": user, "client": body.get("ClientId"), "A": big_a,
                                       "B": big_b, "b": b, "v": v}
        return 200, {"ChallengeName": "PASSWORD_VERIFIER", "ChallengeParameters": {
            "SALT": salt_hex, "SRP_B": long_to_hex(big_b), "SECRET_BLOCK": secret_block,
            "USER_ID_FOR_SRP": user, "USERNAME": user}}

    def _verify(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        r = body.get("ChallengeResponses", {})
        block = r.get("PASSWORD_CLAIM_SECRET_BLOCK", "")
        s = self.sessions.pop(block, None)
        if s is None or s["client"] != body.get("ClientId") or r.get("USERNAME") != s["user"]:
            return self._error("NotAuthorizedException", "Incorrect username or password.")
        try:
            stamp = datetime.datetime.strptime(r.get("TIMESTAMP", ""), "%a %b %d %H:%M:%S UTC %Y")
        except ValueError:
            return self._error("InvalidParameterException", "TIMESTAMP is not in Cognito's format")
        if abs(datetime.datetime.utcnow() - stamp) > CLAIM_AGE:
            return self._error("NotAuthorizedException", "TIMESTAMP is too far off")
        u = calculate_u(s["A"], s["B"])
        shared = pow(s["A"] * pow(s["v"], u, BIG_N), s["b"], BIG_N)
        key = compute_hkdf(bytearray.fromhex(pad_hex(shared)), bytearray.fromhex(pad_hex(long_to_hex(u))))
        msg = (self.pool_name.encode() + s["user"].encode()
               + base64.standard_b64decode(block) + r["TIMESTAMP"].encode())
        want = base64.standard_b64encode(hmac.new(key, msg, hashlib.sha256).digest()).decode()
        if not hmac.compare_digest(want, r.get("PASSWORD_CLAIM_SIGNATURE", "")):
            return self._error("NotAuthorizedException", "Incorrect username or password.")
        result = self.idp.admin_initiate_auth(
            UserPoolId=self.pool_id, ClientId=s["client"], AuthFlow="ADMIN_USER_PASSWORD_AUTH",
            AuthParameters={"USERNAME": s["user"], "PASSWORD": self.passwords[s["user"]]},
        )["AuthenticationResult"]
        return 200, {"AuthenticationResult": result, "ChallengeParameters": {}}
