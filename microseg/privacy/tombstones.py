"""Tombstones: keyed hashes of erased identifiers, so that their events never load again.

`microseg erase` writes one per user id and device id of the person; ingest drops every row
whose user_id or anonymous_id hashes to one (counted as erased in raw.load_manifest, the row
not stored). No clear identifier is kept anywhere: the hash needs the privacy key.
"""

from __future__ import annotations

from collections import Counter

import duckdb
import pandas as pd

from microseg.config import Settings
from microseg.errors import ConfigError
from microseg.privacy.keys import every_key, key_id, keyed_hash

PRIVACY_DDL = (
    "create schema if not exists privacy",
    """create table if not exists privacy.erasure_tombstones (
        id_hash varchar primary key,  -- HMAC-SHA256(key, 'user:<id>' | 'anonymous:<id>')
        key_id varchar not null,      -- which key made it (privacy/keys.py)
        erased_at timestamp not null
    )""",
    """create table if not exists privacy.erasure_log (
        request_id varchar primary key,
        requested_at timestamp not null,
        completed_at timestamp,
        reason varchar,
        identifiers integer not null,  -- user ids and device ids erased (their count only)
        people integer not null,
        rows_deleted json,             -- table -> rows
        files_rewritten json,          -- folder -> files
        models_to_retrain json         -- "model vN" trained on data that held them
    )""",
    "alter table privacy.erasure_log add column if not exists models_to_retrain json",
)


def _has_tombstones(con: duckdb.DuckDBPyConnection) -> bool:
    exists = con.execute(
        "select count(*) from information_schema.tables "
        "where table_schema = 'privacy' and table_name = 'erasure_tombstones'"
    ).fetchone()[0]
    return (
        bool(exists)
        and con.execute("select count(*) > 0 from privacy.erasure_tombstones").fetchone()[0]
    )


def drop_erased_rows(con: duckdb.DuckDBPyConnection, settings: Settings) -> dict[str, int]:
    """Delete the staged rows (`_checked`) of erased identifiers; returns how many per source
    file. Each tombstone is matched with the key that made it (current or rotated out)."""
    if not _has_tombstones(con):
        return {}
    keys = every_key(settings)
    unknown = con.execute(
        "select distinct key_id from privacy.erasure_tombstones "
        "where key_id not in (select unnest(?::varchar[])) order by 1",
        [[key_id(k) for k in keys]],
    ).fetchall()
    if unknown:  # loading now would let erased people back in
        raise ConfigError(
            f"erasure tombstones were made with privacy key {unknown[0][0]}, which is neither "
            "MICROSEG_PRIVACY_KEY nor in MICROSEG_PRIVACY_OLD_KEYS (docs/privacy.md: rotation)"
        )
    ids = con.execute(
        "select distinct 'user' as id_type, user_id as identifier from _checked "
        "where user_id is not null union "
        "select distinct 'anonymous', anonymous_id from _checked where anonymous_id is not null"
    ).fetchall()
    hashed = pd.DataFrame(
        [(t, i, key_id(key), keyed_hash(key, t, i)) for key in keys for t, i in ids],
        columns=["id_type", "identifier", "key_id", "id_hash"],
        dtype=object,
    )
    con.register("_staged_ids", hashed)
    con.execute(
        """create or replace temp table _erased_ids as
           select distinct id_type, identifier from _staged_ids
           where (key_id, id_hash) in (
               select (key_id, id_hash) from privacy.erasure_tombstones)"""
    )
    con.unregister("_staged_ids")
    deleted = con.execute(
        """delete from _checked
           where user_id in (select identifier from _erased_ids where id_type = 'user')
              or anonymous_id in (
                  select identifier from _erased_ids where id_type = 'anonymous')
           returning source_file"""
    ).fetchall()
    return dict(Counter(file_name for (file_name,) in deleted))
