"""Support for tests/browser (the dashboard in a real browser): Debian's Chromium driven by Playwright against a real
`levqor serve` (a subprocess) wired to local fakes of OpenAI, Slack and Stripe.

Chromium comes from the system (`apt-get install -y chromium`), never from `playwright install`.
Without it these tests skip with a message, and fail when LEVQOR_REQUIRE_SERVICES=1 or CI=true.
Screenshots of every page land in test-artifacts/browser/.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from e2e_support import free_port, wait_until_serving

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
PASSWORD = "dashboard-test-password"
EMAIL = "admin@example.com"
OPENAI_KEY = "sk-test-dashboard-0123456789"
STRIPE_KEY = "sk_test_dashboard_fake"
WAIT_MS = 30_000  # the bound of every browser wait (Playwright actions and expect)
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def chromium_path() -> str | None:
    """LEVQOR_CHROMIUM when set (only it), else Debian's /usr/bin/chromium or chromium on PATH."""
    forced = os.environ.get("LEVQOR_CHROMIUM")
    candidates = [forced] if forced else ["/usr/bin/chromium", shutil.which("chromium")]
    return next((p for p in candidates if p and os.path.exists(p)), None)


def _required() -> bool:
    return os.environ.get("LEVQOR_REQUIRE_SERVICES") == "1" or os.environ.get("CI") == "true"


def _missing(reason: str) -> None:
    if _required():
        pytest.fail(reason + " (required: LEVQOR_REQUIRE_SERVICES=1 or CI=true)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium() -> str:
    path = chromium_path()
    if path is None:
        _missing("Chromium is not installed: apt-get install -y chromium (browser tests)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("Playwright is not installed: pip install -r requirements-dev.txt")
    return path


class Dashboard:
    """A running `levqor serve` and its fakes."""

    def __init__(self, url: str, data_dir: Path, env: dict, ai, slack, stripe_fake, log: Path):
        self.url = url
        self.data_dir = data_dir
        self.env = env
        self.ai = ai
        self.slack = slack
        self.stripe = stripe_fake
        self.log = log

    def cli(self, *args: str, input: str | None = None) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "levqor_host.cli", *args],
            env=self.env,
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    def jsonl(self, name: str) -> list[str]:
        p = self.data_dir / "logs" / name
        return p.read_text().splitlines() if p.exists() else []


@pytest.fixture(scope="module")
def dash(chromium, tmp_path_factory):
    with serve_dashboard(tmp_path_factory.mktemp("dashboard")) as d:
        yield d


@contextmanager
def serve_dashboard(tmp: Path, extra_env: dict[str, str] | None = None) -> Iterator[Dashboard]:
    """`levqor serve` on its own data folder in ``tmp`` with the fakes, its admin signed up with
    a password and 500 credits; ``extra_env`` is added to its environment (a ``PYTHONPATH``
    with a test connector, a setting)."""
    from levqor_openai.fake import FakeOpenAI
    from levqor_slack.fake import FakeSlack
    from levqor_stripe.fake import FakeStripe

    with (
        FakeOpenAI(api_key=OPENAI_KEY) as ai,
        FakeSlack() as slack,
        FakeStripe(STRIPE_KEY, hosted_pages=True) as stripe_fake,
    ):
        port = free_port()
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("LEVQOR_", "OPENAI_", "STRIPE_", "SUPABASE_"))
            and k != "DATABASE_URL"
        }
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "LEVQOR_DATA_DIR": str(tmp / "data"),
                "LEVQOR_BASE_URL": f"http://127.0.0.1:{port}",
                "LEVQOR_DEV": "1",  # plain-HTTP cookies (no Secure flag, no __Host- prefix)
                "LEVQOR_ADMIN_EMAIL": EMAIL,
                "LEVQOR_POLL_INTERVAL": "0.05",
                "LEVQOR_CACHE_DIR": "",
                "LEVQOR_SSRF_ALLOW": "127.0.0.1",
                "LEVQOR_SLACK_ALLOWED_HOSTS": "127.0.0.1",
                "LEVQOR_RATE_LIMITS_BUSINESS": "2000/minute",
                "LEVQOR_RATE_LIMIT_SIGNIN": "50/minute",
                "LEVQOR_RATE_LIMIT_IP": "300/minute",
                "LEVQOR_RATE_LIMIT_BILLING": "100/minute",
                "OPENAI_API_KEY": OPENAI_KEY,
                "OPENAI_BASE_URL": ai.base_url,
                "LEVQOR_PLANNER_MAX_RETRIES": "0",
                "STRIPE_SECRET_KEY": STRIPE_KEY,
                "LEVQOR_STRIPE_API_BASE": stripe_fake.url,
                "LEVQOR_STRIPE_PRICE_PRO": "price_pro",
                "LEVQOR_CREDIT_PACKS": '{"starter": {"credits": 1000, "price_id": "price_starter"}}',
                **(extra_env or {}),
            }
        )
        log = tmp / "serve.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "levqor_host.cli", "serve", "--port", str(port)],
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_serving(url, proc, log)
        except AssertionError:
            proc.kill()
            raise
        d = Dashboard(url, tmp / "data", env, ai, slack, stripe_fake, log)
        assert re.search(r"lvq_\S+", log.read_text()), "no first API key printed"
        d.cli("users", "set-password", EMAIL, "--password-stdin", input=PASSWORD + "\n")
        d.cli("credits", "grant", EMAIL, "500")  # runs cost credits (billing is on: Stripe)
        try:
            yield d
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium, args=LAUNCH_ARGS)
        try:
            yield b
        finally:
            b.close()


class Console:
    """What the page said: console messages, uncaught errors, CSP violations."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.page_errors: list[str] = []

    @property
    def csp_violations(self) -> list[str]:
        return [
            m
            for m in self.messages
            if "Content Security Policy" in m or "Content-Security-Policy" in m
        ]


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def page(browser, dash, console, request):
    ctx = browser.new_context(
        base_url=dash.url, viewport={"width": 1280, "height": 900}, locale="en-GB"
    )
    # generous bounds: CI machines are busy (four test processes on two cores). Every wait is for an
    # event (an element's state, an answer, a navigation), so a quiet machine never waits this long.
    ctx.set_default_timeout(WAIT_MS)
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)  # expect()'s own default is 5 s
    pg = ctx.new_page()
    pg.on("console", lambda m: console.messages.append(f"{m.type}: {m.text}"))
    pg.on("pageerror", lambda e: console.page_errors.append(str(e)))
    yield pg
    ctx.close()
    # the strict CSP held on every page the test opened: no violation, no inline code
    assert console.csp_violations == [], console.csp_violations
    allowed = getattr(request.node, "expected_page_errors", ())
    unexpected = [e for e in console.page_errors if not any(a in e for a in allowed)]
    assert unexpected == [], unexpected


def shot(page, name: str, *, full: bool = True) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    # toasts are fixed-position: in a full-page picture they float over the middle
    page.locator(".toast").evaluate_all("els => els.forEach((e) => e.remove())")
    page.screenshot(path=str(path), full_page=full)
    return path


def api_session(dash) -> tuple[requests.Session, dict]:
    """A signed-in requests session (the browser's cookie sign-in) and its CSRF header."""
    s = requests.Session()
    r = s.post(dash.url + "/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return s, {"X-CSRF-Token": r.json()["csrf_token"]}


def sign_in(page, dash, next_path: str = "/") -> None:
    page.goto(f"/signin?next={next_path}")
    page.get_by_label("Email", exact=True).fill(EMAIL)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(re.escape(dash.url + next_path.split("?")[0]) + r"(\?.*)?$"))
