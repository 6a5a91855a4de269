"""Deliver queued messages to their destinations and record each outcome.

Consent is checked again at send time: a person without consent for the message's purpose at
the cutoff (withdrawn after the firing was queued) gets nothing (the message moves to the
suppressions as not_consented:<purpose>). Files: one folder per
destination and run (named by its window) with the messages that run delivered, each message
in one file only: messages.jsonl, messages.csv (the audience CSV rules: consent, formula
neutralization) and manifest.json (rows, sha256 of each file); a re-run rewrites the same
files. Webhooks: signed batches (webhook.py) of the messages no earlier run delivered;
every message ends sent, rejected (a 4xx) or dead_letter (retries exhausted), recorded batch by
batch, so a crash between sending and recording re-sends with the same keys.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime
from pathlib import Path

import pandas as pd

from microseg.activation.grammar import Destination, TriggerFile
from microseg.activation.webhook import WebhookTarget, deliver
from microseg.config import Settings
from microseg.export import neutralized

FINAL_STATUSES = ("sent", "rejected", "dead_letter")
# messages with an outcome at some destination: never decided or withdrawn again
FINAL_KEYS = (
    f"select idempotency_key from marts.activation_deliveries where status in {FINAL_STATUSES}"
)
CSV_TEXT_COLUMNS = ("idempotency_key", "trigger_name", "channel", "person_id", "user_id")


def _withdraw_unconsented(con, cutoff: datetime) -> int:
    """Queued, undelivered messages of people without consent for the message's purpose at
    the cutoff (withdrawn since it was queued): never sent."""
    pending_unconsented = f"""
        from marts.activation_outbox o
        where not marts.has_consent(o.person_id, o.purpose, $cutoff::timestamp)
          and o.idempotency_key not in ({FINAL_KEYS})
    """
    at = {"cutoff": cutoff}
    withdrawn = con.execute(f"select count(*) {pending_unconsented}", at).fetchone()[0]
    if withdrawn:
        con.execute(
            f"""insert or replace into marts.trigger_suppressions by name
                select o.trigger_name, o.person_id, o.session_id, o.fired_at,
                       'not_consented:' || coalesce(o.purpose, 'none') as reason, o.relevance,
                       $cutoff::timestamp as decided_for
                {pending_unconsented}""",
            at,
        )
        con.execute(
            f"delete from marts.activation_outbox where idempotency_key in "
            f"(select o.idempotency_key {pending_unconsented})",
            at,
        )
    return withdrawn


def _record(con, destination: str, rows: list[tuple], cutoff: datetime) -> None:
    """rows: (key, status, attempts, response_code, latency_ms, error)."""
    if not rows:
        return
    now = datetime.utcnow().replace(microsecond=0)
    con.executemany(
        """insert or replace into marts.activation_deliveries
           values (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [(key, destination, *rest, cutoff, now) for key, *rest in rows],
    )
    dead = [
        (key, attempts, error)
        for key, status, attempts, _, _, error in rows
        if status == "dead_letter"
    ]
    if dead:
        con.executemany(
            """insert or replace into marts.activation_dead_letters
               select ?, ?, ?, ?, payload, ? from marts.activation_outbox
               where idempotency_key = ?""",
            [(key, destination, attempts, error, now, key) for key, attempts, error in dead],
        )


def _write_atomically(path: Path, data: bytes) -> str:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)
    return hashlib.sha256(data).hexdigest()


def _pending(con, destination: Destination, cutoff: datetime) -> list[tuple[str, str]]:
    """(key, payload) of the destination's messages without a final outcome, oldest first."""
    return con.execute(
        f"""select o.idempotency_key, o.payload::varchar from marts.activation_outbox o
            where list_contains(o.destinations, $name)
              -- consent again, at each destination
              and marts.has_consent(o.person_id, o.purpose, $cutoff::timestamp)
              and not exists (
                 select 1 from marts.activation_deliveries d
                 where d.idempotency_key = o.idempotency_key and d.destination = $name
                   and d.status in {FINAL_STATUSES})
            order by o.fired_at, o.idempotency_key""",
        {"name": destination.name, "cutoff": cutoff},
    ).fetchall()


def _deliver_files(con, settings: Settings, destination: Destination, window) -> dict[str, int]:
    """The run's file: the messages this run (of this window) delivers to the destination, as
    JSONL and CSV, and a manifest: written first, then recorded, so a crash in between
    rewrites the same file on the re-run; a message is in one file only."""
    new = [
        (key, "sent", 1, None, None, None) for key, _ in _pending(con, destination, window.cutoff)
    ]
    folder = (
        settings.activation_dir
        / destination.name
        / f"{window.start:%Y-%m-%dT%H%M}_{window.cutoff:%Y-%m-%dT%H%M}"
    )
    folder.mkdir(parents=True, exist_ok=True)
    con.register(
        "new_keys", pd.DataFrame({"idempotency_key": [row[0] for row in new]}, dtype=object)
    )
    delivered_by_this_run = """
        select o.idempotency_key, o.trigger_name, o.channel, o.person_id, p.user_id,
               o.session_id, strftime(o.fired_at, '%Y-%m-%dT%H:%M:%S.%fZ') as fired_at,
               round(o.relevance, 6) as relevance, o.payload::varchar as payload
        from marts.activation_outbox o
        join marts.dim_persons p using (person_id)
        where marts.has_consent(o.person_id, o.purpose, ?::timestamp)
          and (o.idempotency_key in (select idempotency_key from new_keys)
               or o.idempotency_key in (
                   select idempotency_key from marts.activation_deliveries
                   where destination = ? and status = 'sent' and delivered_for = ?))
        order by o.fired_at, o.idempotency_key
    """
    params = [window.cutoff, destination.name, window.cutoff]
    rows = con.execute(delivered_by_this_run, params).fetchall()
    lines = "".join(row[-1] + "\n" for row in rows).encode()
    checksums = {"messages.jsonl": _write_atomically(folder / "messages.jsonl", lines)}
    columns = [d[0] for d in con.execute(f"{delivered_by_this_run} limit 0", params).description]
    select_list = ", ".join(neutralized(c) if c in CSV_TEXT_COLUMNS else c for c in columns)
    partial = folder / ".messages.csv.partial"
    literal = str(partial).replace("'", "''")
    con.execute(
        f"copy (select {select_list} from ({delivered_by_this_run})) to '{literal}' "
        "(header, delimiter ',', quote '\"')",
        params,
    )
    con.unregister("new_keys")
    checksums["messages.csv"] = _write_atomically(folder / "messages.csv", partial.read_bytes())
    partial.unlink(missing_ok=True)
    manifest = {
        "destination": destination.name,
        "window_start": f"{window.start:%Y-%m-%dT%H:%M:%SZ}",
        "window_end": f"{window.cutoff:%Y-%m-%dT%H:%M:%SZ}",
        "rows": len(rows),
        "files": {name: {"sha256": digest} for name, digest in checksums.items()},
        "columns": columns,
        "consent": "only people with consent for each message's purpose at the cutoff",
    }
    _write_atomically(folder / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    _record(con, destination.name, new, window.cutoff)
    return {"sent": len(new)} if new else {}


def _deliver_webhook(con, destination: Destination, window) -> dict[str, int]:
    """The destination's messages without a final outcome yet, oldest first, batch by batch."""
    target = WebhookTarget(
        name=destination.name,
        url=destination.url or "",
        secret=destination.secret(),
        timeout_s=destination.timeout_s,
        max_attempts=destination.max_attempts,
        batch_size=destination.batch_size,
    )
    pending = _pending(con, destination, window.cutoff)
    counts: dict[str, int] = {}
    for start in range(0, len(pending), destination.batch_size):
        batch = [
            json.loads(payload) for _, payload in pending[start : start + destination.batch_size]
        ]
        results = deliver(target, batch)
        _record(
            con,
            destination.name,
            [
                (r.idempotency_key, r.status, r.attempts, r.response_code, r.latency_ms, r.error)
                for r in results
            ],
            window.cutoff,
        )
        for r in results:
            counts[r.status] = counts.get(r.status, 0) + 1
    return counts


def deliver_pending(
    con, settings: Settings, triggers: TriggerFile, window
) -> dict[str, dict[str, int]]:
    """Deliver to every destination of triggers.yml; returns destination -> status -> messages."""
    withdrawn = _withdraw_unconsented(con, window.cutoff)
    outcome: dict[str, dict[str, int]] = {}
    for destination in triggers.destinations.values():
        if destination.type == "files":
            outcome[destination.name] = _deliver_files(con, settings, destination, window)
        else:
            outcome[destination.name] = _deliver_webhook(con, destination, window)
    if withdrawn:
        outcome["withdrawn (consent withdrawn since queued)"] = {"suppressed": withdrawn}
    return outcome
