"""Sign-in over real HTTP: Supabase JWTs (HS256 secret and ES256/RS256 from a local JWKS),
host sessions (password, one-time login link), cookies and CSRF.

The fake JWKS endpoint speaks Supabase's documented contract: GET
``<SUPABASE_URL>/auth/v1/.well-known/jwks.json`` answers ``{"keys": [JWK, ...]}`` with ``kid``
and ``alg`` on each key, and access tokens carry ``aud: authenticated``, ``iss:
<SUPABASE_URL>/auth/v1``, ``sub``, ``email``, ``exp``
(https://supabase.com/docs/guides/auth/signing-keys, https://supabase.com/docs/guides/auth/jwts).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from e2e_support import LiveServer, backend_env, clean_env, make_app
from levqor_kernel.testing import FakeServer

# scripts/test-backends runs this file again on PostgreSQL
pytestmark = pytest.mark.backends

HS_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"


class FakeSupabase:
    """The JWKS endpoint of a Supabase project, with keys the test can rotate."""

    def __init__(self) -> None:
        self.server = FakeServer().start()
        self.jwks: list[dict] = []
        self.server.route("GET", "/auth/v1/.well-known/jwks.json", lambda req: {"keys": self.jwks})
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.add("ec-1", self.ec, "ES256")
        self.add("rsa-1", self.rsa, "RS256")

    @property
    def url(self) -> str:
        return self.server.url

    def add(self, kid: str, private, alg: str) -> None:
        algo = jwt.algorithms.ECAlgorithm if alg == "ES256" else jwt.algorithms.RSAAlgorithm
        jwk = algo.to_jwk(private.public_key(), as_dict=True)
        self.jwks.append({**jwk, "kid": kid, "alg": alg, "use": "sig"})

    def fetches(self) -> int:
        return len(self.server.requests_to("/auth/v1/.well-known/jwks.json"))

    def claims(self, **over) -> dict:
        now = int(time.time())
        base = {
            "sub": "8d0c1d0e-0000-4000-8000-000000000001",
            "email": "jwt-user@example.com",
            "aud": "authenticated",
            "role": "authenticated",
            "iss": f"{self.url}/auth/v1",
            "iat": now,
            "exp": now + 3600,
        }
        base.update(over)
        return {k: v for k, v in base.items() if v is not None}

    def es256(self, kid: str = "ec-1", key=None, **over) -> str:
        return jwt.encode(
            self.claims(**over), key or self.ec, algorithm="ES256", headers={"kid": kid}
        )

    def rs256(self, kid: str = "rsa-1", **over) -> str:
        return jwt.encode(self.claims(**over), self.rsa, algorithm="RS256", headers={"kid": kid})

    def hs256(self, secret: str = HS_SECRET, **over) -> str:
        return jwt.encode(self.claims(**over), secret, algorithm="HS256")


def _b64(d: bytes) -> str:
    return base64.urlsafe_b64encode(d).rstrip(b"=").decode()


def forge(header: dict, claims: dict, key: bytes | None) -> str:
    """A token built by hand (PyJWT refuses to make the malicious ones)."""
    signing = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    sig = _b64(hmac.new(key, signing.encode(), hashlib.sha256).digest()) if key else ""
    return signing + "." + sig


@pytest.fixture
def supa():
    s = FakeSupabase()
    yield s
    s.server.stop()


@pytest.fixture
def srv(tmp_path, supa):
    app = make_app(
        tmp_path,
        env={"SUPABASE_URL": supa.url, "SUPABASE_JWT_SECRET": HS_SECRET, "LEVQOR_DEV": "1"},
        start_workers=False,
    )
    s = LiveServer(app)
    yield s
    s.stop()


def me(srv, token: str):
    return srv.client(token).get("/api/v1/me")


# ---------------------------------------------------------------- JWTs
def test_valid_tokens_of_each_algorithm_sign_in_and_create_the_user_once(srv, supa):
    assert srv.state.store.users.get_by_email("jwt-user@example.com") is None
    for token in (supa.es256(), supa.rs256(), supa.hs256()):
        r = me(srv, token)
        assert r.status_code == 200, r.text
        assert r.json()["email"] == "jwt-user@example.com"
    users = [u for u in srv.state.store.users.list() if u["email"] == "jwt-user@example.com"]
    assert len(users) == 1
    # a JWT user works with the API (every scope but admin)
    c = srv.client(supa.es256())
    r = c.post(
        "/api/v1/pipelines",
        json={
            "pipeline": {
                "levqor": 1,
                "trigger": {"type": "manual"},
                "steps": [
                    {"id": "a", "connector": "core", "action": "transform", "payload": {"value": 1}}
                ],
            }
        },
    )
    assert r.status_code == 201, r.text
    assert supa.fetches() == 1  # the JWKS was cached


def test_the_subject_decides_after_first_sight(srv, supa):
    assert me(srv, supa.es256()).status_code == 200
    uid = srv.state.store.users.get_by_email("jwt-user@example.com")["id"]
    # the same Supabase user changed their email: still the same Levqor user
    r = me(srv, supa.es256(email="renamed@example.com"))
    assert r.status_code == 200 and r.json()["id"] == uid
    # another Supabase user: another Levqor user
    r = me(srv, supa.es256(sub="8d0c1d0e-0000-4000-8000-000000000002", email="other@example.com"))
    assert r.status_code == 200 and r.json()["id"] != uid


def test_bad_tokens_are_refused(srv, supa):
    pem = supa.ec.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    rsa_pem = supa.rsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    good = supa.claims()
    valid = supa.es256()
    h, p, s = valid.split(".")
    other_payload = _b64(json.dumps({**good, "email": "admin@localhost"}).encode())
    cases = {
        "alg-none": forge({"alg": "none", "typ": "JWT"}, good, None),
        "alg-none-kid": forge({"alg": "none", "kid": "ec-1"}, good, None),
        "hs256-with-public-key": forge({"alg": "HS256", "typ": "JWT", "kid": "ec-1"}, good, pem),
        "hs256-with-rsa-public-key": forge({"alg": "HS256", "kid": "rsa-1"}, good, rsa_pem),
        "hs256-wrong-secret": supa.hs256(secret="not-the-project-secret-but-32-chars-long"),
        "expired": supa.es256(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200),
        "no-exp": supa.es256(exp=None),
        "wrong-aud": supa.es256(aud="anon"),
        "no-aud": supa.es256(aud=None),
        "wrong-iss": supa.es256(iss="https://evil.example.com/auth/v1"),
        "unknown-kid": supa.es256(kid="nope", key=ec.generate_private_key(ec.SECP256R1())),
        "no-kid": jwt.encode(good, supa.ec, algorithm="ES256"),
        "kid-of-other-key-type": jwt.encode(
            good, supa.ec, algorithm="ES256", headers={"kid": "rsa-1"}
        ),
        "tampered-payload": f"{h}.{other_payload}.{s}",
        "tampered-signature": f"{h}.{p}.{s[:-4]}AAAA",
        "no-email": supa.es256(email=None),
        "garbage": "aaa.bbb.ccc",
    }
    for name, token in cases.items():
        r = me(srv, token)
        assert r.status_code == 401, (name, r.text)
        assert r.json()["error"]["code"] == "unauthorized", name
        assert token not in r.text
    assert srv.state.store.users.get_by_email("admin@localhost") is None
    assert srv.state.store.users.get_by_email("jwt-user@example.com") is None
    msgs = {n: me(srv, t).json()["error"]["message"] for n, t in cases.items()}
    assert "expired" in msgs["expired"] and "audience" in msgs["wrong-aud"]
    assert "issuer" in msgs["wrong-iss"] and "algorithm" in msgs["alg-none"]


def test_random_kids_do_not_make_the_host_fetch_the_jwks_again(srv, supa):
    assert me(srv, supa.es256()).status_code == 200
    assert supa.fetches() == 1
    # 30 made-up kids within the default refetch interval (5 minutes): no fetch at all
    bogus = ec.generate_private_key(ec.SECP256R1())
    for i in range(30):
        r = me(srv, supa.es256(kid=f"random-{i}", key=bogus))
        assert r.status_code == 401 and "unknown key" in r.json()["error"]["message"]
    assert supa.fetches() == 1
    assert me(srv, supa.es256()).status_code == 200


def test_unknown_kid_refetches_the_jwks_at_most_once_per_interval(tmp_path, supa):
    app = make_app(
        tmp_path,
        env={"SUPABASE_URL": supa.url, "LEVQOR_JWKS_REFETCH_SECONDS": "1"},
        start_workers=False,
    )
    s = LiveServer(app)
    try:
        assert me(s, supa.es256()).status_code == 200
        assert supa.fetches() == 1
        # the project rotates to a new key: within the interval the host does not refetch
        new = ec.generate_private_key(ec.SECP256R1())
        supa.add("ec-2", new, "ES256")
        assert me(s, supa.es256(kid="ec-2", key=new)).status_code == 401
        assert supa.fetches() == 1
        time.sleep(1.2)
        # after it, the first unknown kid refetches once and the rotated key is accepted
        assert me(s, supa.es256(kid="ec-2", key=new)).status_code == 200
        assert supa.fetches() == 2
        bogus = ec.generate_private_key(ec.SECP256R1())

        def burst(prefix: str) -> float:
            """30 unknown kids; how long they took (a busy machine may need more than 1 s)."""
            started = time.monotonic()
            for i in range(30):
                assert me(s, supa.es256(kid=f"{prefix}-{i}", key=bogus)).status_code == 401
            return time.monotonic() - started

        # at most one refetch per started second of the burst: none when it is quick
        took = burst("random")
        assert supa.fetches() <= 2 + int(took), took
        time.sleep(1.2)
        before = supa.fetches()
        took = burst("again")
        assert before + 1 <= supa.fetches() <= before + 1 + int(took), took
    finally:
        s.stop()


def test_algorithms_are_pinned_by_configuration(tmp_path, supa):
    app = make_app(
        tmp_path,
        env={
            "SUPABASE_URL": supa.url,
            "SUPABASE_JWT_SECRET": HS_SECRET,
            "LEVQOR_JWT_ALGORITHMS": "ES256",
        },
        start_workers=False,
    )
    s = LiveServer(app)
    try:
        assert me(s, supa.es256()).status_code == 200
        assert me(s, supa.hs256()).status_code == 401  # valid HS256, but not an accepted algorithm
        assert me(s, supa.rs256()).status_code == 401
    finally:
        s.stop()


def test_jwks_down_is_a_503_not_a_sign_in(tmp_path):
    dead = FakeServer().start()
    url = dead.url
    dead.stop()
    app = make_app(tmp_path, env={"SUPABASE_URL": url}, start_workers=False)
    s = LiveServer(app)
    try:
        key = ec.generate_private_key(ec.SECP256R1())
        now = int(time.time())
        token = jwt.encode(
            {
                "sub": "x",
                "email": "a@b.c",
                "aud": "authenticated",
                "iss": f"{url}/auth/v1",
                "exp": now + 60,
            },
            key,
            algorithm="ES256",
            headers={"kid": "k"},
        )
        r = me(s, token)
        assert r.status_code == 503 and r.json()["error"]["code"] == "auth_unavailable"
    finally:
        s.stop()


def test_without_supabase_settings_tokens_are_refused_with_a_hint(tmp_path, supa):
    s = LiveServer(make_app(tmp_path, start_workers=False))
    try:
        r = me(s, supa.hs256())
        assert r.status_code == 401 and "SUPABASE_JWT_SECRET" in r.json()["error"]["message"]
    finally:
        s.stop()


# ---------------------------------------------------------------- host sessions
def levqor(data, *args, stdin: str | None = None):
    base = clean_env()
    env = {
        **base,
        "LEVQOR_DATA_DIR": str(data),
        "LEVQOR_SCHEDULER": "off",
        "LEVQOR_BASE_URL": "http://levqor.test",
        **backend_env(data.parent),  # the database of make_app(data.parent)
    }
    r = subprocess.run(
        [sys.executable, "-m", "levqor_host.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def login(c, email, password):
    return c.post("/api/v1/auth/login", json={"email": email, "password": password})


def test_password_sign_in_cookies_csrf_and_logout(srv):
    from levqor_host.security.passwords import hash_password

    st = srv.state.store
    u = st.users.create("op@example.com")
    st.auth.set_password_hash(u["id"], hash_password("correct horse battery"))
    c = srv.client()
    # wrong password and unknown email: the same answer
    for email, pw in (
        ("op@example.com", "wrong password!"),
        ("nobody@example.com", "correct horse battery"),
    ):
        r = login(c, email, pw)
        assert r.status_code == 401 and r.json()["error"] == {
            "code": "invalid_credentials",
            "message": "wrong email or password",
        }
    r = login(c, "OP@example.com", "correct horse battery")
    assert r.status_code == 200, r.text
    csrf = r.json()["csrf_token"]
    cookie = next(h for h in r.raw.headers.getlist("Set-Cookie") if h.startswith("levqor_session="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert c.cookies.get("levqor_csrf") == csrf
    # reads work with the cookie alone
    assert c.get("/api/v1/me").json()["email"] == "op@example.com"
    doc = {
        "pipeline": {
            "levqor": 1,
            "trigger": {"type": "manual"},
            "steps": [
                {"id": "a", "connector": "core", "action": "transform", "payload": {"value": 1}}
            ],
        }
    }
    # a mutation without the CSRF token (what a cross-site form would send) is refused
    r = c.post("/api/v1/pipelines", json=doc)
    assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed"
    r = c.post("/api/v1/pipelines", json=doc, headers={"X-CSRF-Token": "x" * 43})
    assert r.status_code == 403
    r = c.post(
        "/api/v1/pipelines",
        data="name=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 403
    assert st.pipelines.list(u["id"]) == []
    r = c.post("/api/v1/pipelines", json=doc, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201, r.text
    # logout needs the token too, then the cookie is dead
    assert c.post("/api/v1/auth/logout").status_code == 403
    sid = c.cookies.get("levqor_session")
    r = c.post("/api/v1/auth/logout", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and r.json() == {"signed_out": True}
    c2 = srv.client()
    c2.cookies.set("levqor_session", sid)
    assert c2.get("/api/v1/me").status_code == 401


def test_api_key_requests_need_no_csrf_token(srv):
    user, key = srv.user_with_key("k@example.com")
    c = srv.client(key)
    c.cookies.set("levqor_session", "stale-cookie-ignored-when-a-key-is-sent")
    r = c.post(
        "/api/v1/pipelines",
        json={
            "pipeline": {
                "levqor": 1,
                "trigger": {"type": "manual"},
                "steps": [
                    {"id": "a", "connector": "core", "action": "transform", "payload": {"value": 1}}
                ],
            }
        },
    )
    assert r.status_code == 201


def test_cookies_are_secure_outside_development(tmp_path):
    from levqor_host.security.passwords import hash_password

    s = LiveServer(make_app(tmp_path, start_workers=False))
    try:
        u = s.state.store.users.create("op@example.com")
        s.state.store.auth.set_password_hash(u["id"], hash_password("correct horse battery"))
        r = login(s.client(), "op@example.com", "correct horse battery")
        assert r.status_code == 200
        cookies = r.raw.headers.getlist("Set-Cookie")
        sess = next(h for h in cookies if h.startswith("__Host-levqor_session="))
        assert (
            "Secure" in sess
            and "HttpOnly" in sess
            and "SameSite=Lax" in sess
            and "Domain" not in sess
        )
        assert all("Secure" in h for h in cookies)
    finally:
        s.stop()


def test_cli_set_password_and_one_time_login_link(tmp_path):
    data = tmp_path / "data"
    levqor(data, "users", "create", "ops@example.com")
    out = levqor(
        data,
        "users",
        "set-password",
        "ops@example.com",
        "--password-stdin",
        stdin="a long enough password\n",
    )
    assert "password set" in out
    link = levqor(data, "users", "login-link", "ops@example.com").strip()
    assert link.startswith("http://levqor.test/auth/link/")
    token = link.rsplit("/", 1)[1]
    s = LiveServer(make_app(tmp_path, env={"LEVQOR_DEV": "1"}, start_workers=False))
    try:
        # the stored hash is scrypt and never the password

        u = s.state.store.users.get_by_email("ops@example.com")
        assert s.state.store.auth.get_password_hash(u["id"]).startswith("scrypt$32768$8$1$")
        assert login(s.client(), "ops@example.com", "a long enough password").status_code == 200
        c = s.client()
        r = c.get(f"/auth/link/{token}", allow_redirects=False)
        assert r.status_code == 303 and r.headers["Location"] == "/"
        assert c.cookies.get("levqor_session")
        assert c.get("/api/v1/me").json()["email"] == "ops@example.com"
        # one use only
        r = s.client().get(f"/auth/link/{token}", allow_redirects=False)
        assert r.status_code == 404 and "levqor_session" not in r.headers.get("Set-Cookie", "")
        assert s.client().get("/auth/link/not-a-real-token").status_code == 404
    finally:
        s.stop()


def test_expired_login_link_is_refused(tmp_path):
    s = LiveServer(make_app(tmp_path, start_workers=False))
    try:
        u = s.state.store.users.create("late@example.com")
        token = s.state.store.auth.create_login_link(u["id"], -1)
        assert s.state.store.auth.consume_login_link(token) is None
        r = s.client().get(f"/auth/link/{token}", allow_redirects=False)
        assert r.status_code == 404
    finally:
        s.stop()
