"""Transactional email through Resend: support forwarding, welcome, run failure, low credit.

Resend's API (https://resend.com/docs/api-reference/emails/send-email): ``POST {base}/emails``
with ``Authorization: Bearer $RESEND_API_KEY`` and JSON ``from``, ``to``, ``subject``, ``text``
(and ``reply_to``), answering ``{"id": ...}``; an ``Idempotency-Key`` header makes a retried
send go out once. The base is ``LEVQOR_RESEND_API_BASE`` (default https://api.resend.com), the
sender ``LEVQOR_MAIL_FROM`` (a verified domain of the Resend account).

Without ``RESEND_API_KEY`` nothing is sent (and nothing pretends to be): welcome, failure and
low-credit emails are skipped with a debug line, support messages stay in the inbox only.
Background sends (welcome, run failure, low credit) run on a small thread pool so a slow mail
server never delays a request or a worker. Logs name user ids, never addresses.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import requests

if TYPE_CHECKING:
    from levqor_host.config import Config
    from levqor_host.metrics import Metrics
    from levqor_host.store import Store

log = logging.getLogger("levqor.mail")


class MailError(Exception):
    """Resend refused or could not be reached (message names the reason, never the key)."""


class Mailer:
    """Email through Resend for one app, handed its configuration, the metrics it counts and
    the store it reads a failed run's pipeline and owner from."""

    def __init__(self, config: Config, metrics: Metrics, store: Store) -> None:
        self.cfg = config
        self.metrics = metrics
        self.store = store
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._session = requests.Session()

    @property
    def configured(self) -> bool:
        return bool(self.cfg.mail.resend_api_key)

    # ------------------------------------------------------------------ sending
    def send(
        self,
        *,
        to: str,
        subject: str,
        text: str,
        kind: str,
        reply_to: str | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Send one email now; returns Resend's id. Raises MailError."""
        if not self.configured:
            raise MailError("email is off: set RESEND_API_KEY (and LEVQOR_MAIL_FROM)")
        body: dict[str, Any] = {
            "from": self.cfg.mail.mail_from,
            "to": [to],
            "subject": subject[:250],
            "text": text,
        }
        if reply_to:
            body["reply_to"] = reply_to
        headers = {"Authorization": f"Bearer {self.cfg.mail.resend_api_key}"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key[:256]
        url = f"{self.cfg.mail.resend_api_base}/emails"
        last = ""
        for attempt in range(3):
            try:
                r = self._session.post(url, json=body, headers=headers, timeout=(5, 15))
            except requests.RequestException as e:
                last = f"Resend unreachable: {type(e).__name__}"
                time.sleep(0.2 * (attempt + 1))
                continue
            if r.status_code < 300:
                self.metrics.emails.labels(kind, "sent").inc()
                try:
                    return str(r.json().get("id") or "")
                except ValueError:
                    return ""
            try:
                err = r.json()
                reason = f"{err.get('name', 'error')}: {err.get('message', '')}"
            except ValueError:
                reason = r.text[:200]
            last = f"Resend answered {r.status_code} ({reason})"
            if r.status_code == 429 or r.status_code >= 500:
                try:
                    wait = min(float(r.headers.get("retry-after") or 0.5), 5.0)
                except ValueError:
                    wait = 0.5
                time.sleep(wait)
                continue
            break
        self.metrics.emails.labels(kind, "failed").inc()
        from levqor_host.observability import scrub

        raise MailError(scrub(last))

    def _background(self, kind: str, what: str, fn: Any, /, *args: Any, **kw: Any) -> Future | None:
        if not self.configured:
            log.debug("%s email skipped: RESEND_API_KEY is not set", kind)
            self.metrics.emails.labels(kind, "skipped").inc()
            return None
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(2, thread_name_prefix="levqor-mail")
            pool = self._pool

        def job() -> None:
            try:
                fn(*args, **kw)
            except MailError as e:
                log.warning("%s email for %s not sent: %s", kind, what, e)
            except Exception:  # noqa: BLE001
                log.exception("%s email for %s failed", kind, what)

        return pool.submit(job)

    # ------------------------------------------------------------------ transactional
    def welcome(self, user: dict) -> Future | None:
        """Store listener ``user_created``: a welcome email to the new user."""
        base = self.cfg.base_url
        text = (
            "Welcome to Levqor.\n\n"
            f"Your automation dashboard: {base}\n"
            f"API reference: {base}/api/v1/openapi.json\n\n"
            "Build a pipeline from a webhook, a schedule or a manual trigger, connect your "
            "services, and every run is recorded step by step.\n"
        )
        return self._background(
            "welcome",
            f"user {user['id']}",
            self.send,
            to=user["email"],
            subject="Welcome to Levqor",
            text=text,
            kind="welcome",
            idempotency_key=f"welcome:{user['id']}",
        )

    def run_failed(self, run: dict, result: Any) -> Future | None:
        """Called by Services.run_finished for a failed run: an email to the pipeline's
        owner when the pipeline document has ``"notify_on_failure": true``."""
        if not self.configured:
            return None
        return self._background("run_failed", f"run {run['id']}", self._run_failed, run, result)

    def _run_failed(self, run: dict, result: Any) -> None:
        store = self.store
        version = store.pipelines.get_version(run["user_id"], run["pipeline_id"], run["version"])
        if not version or not version["doc"].get("notify_on_failure"):
            return
        user = store.users.get(run["user_id"])
        pipeline = store.pipelines.get(run["user_id"], run["pipeline_id"])
        if user is None or pipeline is None:
            return
        err = result.error or {}
        from levqor_host.observability import scrub

        text = (
            f'A run of your pipeline "{pipeline["name"]}" failed.\n\n'
            f"Run: {run['id']}\n"
            f"Failed step: {err.get('step') or '-'}\n"
            f"Error: {scrub(err.get('type') or '')} {scrub(err.get('message') or '')}\n\n"
            f"Details: {self.cfg.base_url}/runs/{run['id']}\n"
            "You get this email because the pipeline sets notify_on_failure.\n"
        )
        self.send(
            to=user["email"],
            subject=f'Levqor: a run of "{pipeline["name"]}" failed',
            text=text,
            kind="run_failed",
            idempotency_key=f"run-failed:{run['id']}",
        )

    def approval_requested(
        self, run: dict, approve_url: str, reject_url: str
    ) -> Future | None:
        """A run waits for an approval: an email to the pipeline's owner with the approval's
        message and its signed one-time approve and reject links (once per wait: the Resend
        Idempotency-Key names the wait's nonce)."""
        if not self.configured:
            return None
        return self._background(
            "approval", f"run {run['id']}", self._approval_requested, run, approve_url, reject_url
        )

    def _approval_requested(self, run: dict, approve_url: str, reject_url: str) -> None:
        store = self.store
        user = store.users.get(run["user_id"])
        pipeline = store.pipelines.get(run["user_id"], run["pipeline_id"])
        if user is None or pipeline is None:
            return
        wait = run.get("wait") or {}
        message = (wait.get("approval") or {}).get("message") or ""
        expires = ""
        if wait.get("expires_at"):
            expires = f"Without a decision by {wait['expires_at']}, its timeout decides.\n"
        text = (
            f'A run of your pipeline "{pipeline["name"]}" waits for your approval'
            f" at step {wait.get('step') or '-'}.\n\n"
            + (f"{message}\n\n" if message else "")
            + f"Approve: {approve_url}\n"
            f"Reject: {reject_url}\n\n"
            + expires
            + f"Run: {self.cfg.base_url}/runs/{run['id']}\n"
            "Each link works once.\n"
        )
        self.send(
            to=user["email"],
            subject=f'Levqor: "{pipeline["name"]}" waits for your approval',
            text=text,
            kind="approval",
            idempotency_key=f"approval:{run['id']}:{wait.get('nonce') or ''}",
        )

    def trigger_failing(self, trigger: dict, failing_since: str) -> Future | None:
        """An app trigger failed ``LEVQOR_TRIGGER_FAIL_AFTER`` polls in a row: an email to its
        pipeline's owner, once per failing spell (the trigger service claims the notice first;
        the Resend Idempotency-Key names the spell)."""
        if not self.configured:
            return None
        return self._background(
            "trigger_failing", f"trigger {trigger['id']}", self._trigger_failing, trigger,
            failing_since,
        )  # fmt: skip

    def _trigger_failing(self, trigger: dict, failing_since: str) -> None:
        store = self.store
        user = store.users.get(trigger["user_id"])
        pipeline = store.pipelines.get(trigger["user_id"], trigger["pipeline_id"])
        if user is None or pipeline is None:
            return
        err = trigger.get("last_error") or {}
        from levqor_host.observability import scrub

        text = (
            f'The trigger of your pipeline "{pipeline["name"]}" ({trigger["connector"]}: '
            f"{trigger['trigger']}) failed {trigger['failures']} times in a row, so no new "
            "items start runs until it works again.\n\n"
            f"Last error: {scrub(err.get('type') or '')} {scrub(err.get('message') or '')}\n\n"
            "Levqor keeps trying, less often. Check the pipeline's credential and trigger "
            f"settings: {self.cfg.base_url}/pipelines/{pipeline['id']}\n"
            "You get this email once; the next one only after the trigger worked again.\n"
        )
        self.send(
            to=user["email"],
            subject=f'Levqor: the trigger of "{pipeline["name"]}" is failing',
            text=text,
            kind="trigger_failing",
            idempotency_key=f"trigger-failing:{trigger['id']}:{failing_since}",
        )

    def credential_broken(self, user_id: str, name: str, reason: str) -> Future | None:
        """A connected account's refresh token was refused: tell its owner to connect it again
        (the credential service calls it once, when the credential turns broken; the Resend
        Idempotency-Key names the credential and the hour, so a retried send goes out once)."""
        if not self.configured:
            return None
        return self._background(
            "credential_broken", f"credential {name}", self._credential_broken, user_id, name, reason
        )

    def _credential_broken(self, user_id: str, name: str, reason: str) -> None:
        user = self.store.users.get(user_id)
        if user is None:
            return
        from levqor_host.observability import scrub

        text = (
            f'Your credential "{name}" stopped working: {scrub(reason)}\n\n'
            "Steps and triggers that use it fail or are paused until you connect the account "
            f"again: {self.cfg.base_url}/credentials (Connect, with the same name).\n"
        )
        self.send(
            to=user["email"],
            subject=f'Levqor: connect "{name}" again',
            text=text,
            kind="credential_broken",
            idempotency_key=f"credential-broken:{user_id}:{name}:{int(time.time() // 3600)}",
        )

    def low_credit_warning(self, user: dict, balance: int, crossing: str) -> Future | None:
        """Warn ``user`` that their balance (``balance`` credits) fell below
        ``LEVQOR_LOW_CREDIT_THRESHOLD``. The ledger calls it once per crossing of the threshold
        (:class:`~levqor_host.billing.ledger.LowCredit`); ``crossing`` names it in the Resend
        Idempotency-Key, so a retried send goes out once."""
        text = (
            f"Your Levqor balance is {balance} credits, below {self.cfg.billing.low_credit_threshold}.\n"
            "Runs that cost more than your balance are refused. Add credits or change your "
            f"plan: {self.cfg.base_url}/billing\n"
        )
        return self._background(
            "low_credit",
            f"user {user['id']}",
            self.send,
            to=user["email"],
            subject="Levqor: your credits are running low",
            text=text,
            kind="low_credit",
            idempotency_key=f"low-credit:{user['id']}:{crossing}",
        )

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
