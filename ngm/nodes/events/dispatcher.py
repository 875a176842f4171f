"""Deliver pending webhook deliveries: signed JSON POSTs, retried with exponential backoff.

Runs only on the instance holding the monitor lease, so each delivery is attempted by one instance at a
time. Delivery is at least once (a crash between a receiver's 2xx and our bookkeeping repeats it):
receivers deduplicate on X-NGM-Event-ID. What no retry can change fails at once, with the reason: a secret
the configured keys cannot decrypt, an address the outbound policy refuses.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from ngm.models.query import select_one, update
from ngm.models.rows import utcnow
from ngm.nodes.events.signing import backoff_seconds, sign
from ngm.nodes.events.store import due_deliveries, retry_at
from ngm.nodes.health.probe import classify_exception
from ngm.nodes.secrets.keyring import KeyringError

log = logging.getLogger("ngm.webhooks")
REFUSED_BY_POLICY = ("address_blocked", "redirect_refused")


class WebhookDispatcher:
    def __init__(self, db, keyring, outbound, max_attempts: int = 8, timeout: float = 10.0,
                 concurrency: int = 16, batch: int = 100):
        self.db, self.keyring, self.outbound = db, keyring, outbound
        self.max_attempts, self.timeout, self.batch = max_attempts, timeout, batch
        self._sem = asyncio.Semaphore(concurrency)

    async def run_once(self) -> int:
        """Deliver what is due: in order for each webhook, different webhooks in parallel."""
        due = await due_deliveries(self.db, utcnow(), self.batch)
        by_hook: dict[str, list[dict]] = {}
        for delivery in due:
            by_hook.setdefault(delivery["webhook_id"], []).append(delivery)
        await asyncio.gather(*(self._deliver_in_order(items) for items in by_hook.values()))
        return len(due)

    async def _deliver_in_order(self, deliveries: list[dict]) -> None:
        for delivery in deliveries:
            await self._deliver(delivery)

    async def _deliver(self, delivery: dict) -> None:
        async with self._sem:
            hook = await select_one(self.db, "Webhook", {"id": delivery["webhook_id"]})
            if not hook or not hook.get("active"):
                await self._finish(delivery, "failed", None, "webhook removed or inactive")
                return
            body = json.dumps(delivery["payload"], separators=(",", ":")).encode()
            try:
                secret = self.keyring.decrypt(hook["secret_encrypted"])
            except KeyringError:
                await self._finish(delivery, "failed", None, "the webhook's signing secret cannot be decrypted "
                                   "with the configured encryption keys")
                return
            headers = {"Content-Type": "application/json", "User-Agent": "ngm-webhooks/1",
                       "X-NGM-Event": delivery["event_type"], "X-NGM-Event-ID": delivery["event_id"],
                       "X-NGM-Delivery-ID": delivery["id"], "X-NGM-Signature": sign(secret, int(time.time()), body)}
            status, error = None, None
            try:
                resp = await self.outbound.request("POST", hook["url"], headers=headers, data=body,
                                                   timeout=self.timeout, max_body=4096, max_redirects=0)
                status = resp.status_code
                if 200 <= status < 300:
                    await self._finish(delivery, "delivered", status, None)
                    return
                error = f"answered HTTP {status}"
            except Exception as exc:  # a failed attempt is recorded, never raised
                outcome, error = classify_exception(exc)
                if outcome in REFUSED_BY_POLICY:  # refused again on every attempt: no retry
                    await self._finish(delivery, "failed", None, error)
                    return
            attempts = int(delivery["attempts"]) + 1
            if attempts >= self.max_attempts:
                await self._finish(delivery, "failed", status, error, attempts)
            else:
                await update(self.db, "WebhookDelivery", delivery["id"], {
                    "attempts": attempts, "last_status_code": status, "last_error": error,
                    "next_attempt_at": retry_at(utcnow(), backoff_seconds(attempts))})

    async def _finish(self, delivery: dict, status: str, code: int | None, error: str | None,
                      attempts: int | None = None) -> None:
        fields = {"status": status, "attempts": attempts or int(delivery["attempts"]) + 1,
                  "last_status_code": code, "last_error": error}
        if status == "delivered":
            fields["delivered_at"] = utcnow()
        else:
            log.warning("webhook delivery %s to %s failed: %s", delivery["id"], delivery["webhook_id"], error)
        await update(self.db, "WebhookDelivery", delivery["id"], fields)
