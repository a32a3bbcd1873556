"""Operator commands (``fnbus admin …``).

Account commands speak to the registry's internal API. The secrets-key commands
work on the registry's tables directly (like ``fnbus migrate``): re-sealing is
database maintenance, done in short batches while the services keep running
(docs/secrets-rotation.md).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets as pysecrets
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx

from fnbus.config import Settings
from fnbus.permissions import Role
from fnbus.secrets_check import MIN_SECRET_CHARS

if TYPE_CHECKING:
    from services.registry.crypto import SecretBox


def add_parser(sub: Any) -> None:
    admin = sub.add_parser("admin", help="operator commands (accounts)")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    p = admin_sub.add_parser("create-account", help="create an account and its first admin; "
                             "prints the admin's API key (shown once)")
    p.add_argument("account_id", help="account id (the original platform's brand id)")
    p.add_argument("--name", default=None, help="display name (default: the id)")
    p.add_argument("--admin-name", default="admin")
    p.add_argument("--roles", default=",".join(r.value for r in Role),
                   help="comma-separated roles of the first user (default: all three)")
    p.add_argument("--accept-terms", action="store_true",
                   help="also accept the terms of use (provision the account)")

    p = admin_sub.add_parser(
        "rotate-secrets-key",
        help="re-seal every stored secret and certificate with a new secrets key, online")
    key = p.add_mutually_exclusive_group()
    key.add_argument("--new-key", default=None,
                     help=f"the new key (at least {MIN_SECRET_CHARS} characters; default: a "
                     "random 256-bit key is generated)")
    key.add_argument("--reseal-only", action="store_true",
                     help="keep the keys as configured; re-seal what is not under the current "
                     "key (after an interrupted run, or keys distributed by hand)")
    p.add_argument("--env-file", type=Path, default=None,
                   help="the secrets env file the services follow (default: <home>/secrets.env)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_ROWS,
                   help=f"rows per transaction (default {DEFAULT_BATCH_ROWS})")
    p.add_argument("--reload-wait-s", type=float, default=DEFAULT_RELOAD_WAIT_S,
                   help="after writing the env file, how long to let the services reload it "
                   f"before re-sealing (default {DEFAULT_RELOAD_WAIT_S})")

    p = admin_sub.add_parser("secrets-key-status",
                             help="stored sealed values per secrets key id (which keys are in use)")
    admin.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Run one ``fnbus admin`` command and print its result as JSON."""
    import asyncio

    result = asyncio.run(run(args, Settings()))
    print(json.dumps(result, indent=2))
    return 0


async def run(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    if args.admin_command == "rotate-secrets-key":
        return await rotate_secrets_key(args, settings)
    if args.admin_command == "secrets-key-status":
        return await secrets_key_status(settings)
    headers = {"Authorization": f"Bearer {settings.service_token}"}
    async with httpx.AsyncClient(base_url=settings.registry_url, headers=headers, timeout=30) as c:
        if args.admin_command == "create-account":
            roles = [r.strip() for r in args.roles.split(",") if r.strip()]
            r = await c.post("/internal/accounts", json={
                "id": args.account_id, "name": args.name or args.account_id,
                "admin_name": args.admin_name, "roles": roles})
            _raise(r)
            result: dict[str, Any] = r.json()
            if args.accept_terms:
                r = await c.post(f"/internal/accounts/{args.account_id}/terms-of-use",
                                 json={"accept": True})
                _raise(r)
                result["provisioned"] = True
            return result
    raise SystemExit(f"unknown admin command {args.admin_command}")


def _raise(response: httpx.Response) -> None:
    if response.status_code >= 400:
        try:
            err = response.json()["error"]
            message = f"{err['code']}: {err['message']}"
        except (ValueError, KeyError, TypeError):
            message = response.text
        raise SystemExit(f"registry answered {response.status_code}: {message}")


# -- the secrets keyring --------------------------------------------------------------
#: Rows re-sealed per transaction: short locks, steady progress.
DEFAULT_BATCH_ROWS = 200
#: The registry looks at its env file once a second; give every instance a margin.
DEFAULT_RELOAD_WAIT_S = 3.0


@dataclass(frozen=True)
class SealedTable:
    """A table holding sealed values: its primary key and its sealed columns."""

    name: str
    key_columns: tuple[str, ...]
    sealed_columns: tuple[str, ...]


#: Every place the registry stores a value sealed with the secrets key.
SEALED_TABLES = (
    SealedTable("secrets", ("account_id", "key"), ("value_enc",)),
    SealedTable("certificates", ("account_id", "name"), ("cert_enc", "key_enc", "ca_enc")),
)

Progress = Callable[[str, int, int], None]


def _keyring(current: str, old: list[str]) -> SecretBox:
    from services.registry.crypto import SecretBox

    return SecretBox(current, old)


def _stderr_progress(table: str, done: int, total: int) -> None:
    print(f"{table}: {done}/{total} rows re-sealed", file=sys.stderr, flush=True)


async def count_by_key(conn: asyncpg.Connection) -> dict[str, dict[str, int]]:
    """Sealed values per key id (``"unlabelled"``: sealed before key ids), per table."""
    from services.registry.crypto import KEY_ID_CHARS, SEALED_PREFIX

    counts: dict[str, dict[str, int]] = {}
    for table in SEALED_TABLES:
        for column in table.sealed_columns:
            rows = await conn.fetch(
                f"""SELECT CASE WHEN substring({column} FROM 1 FOR $1) = $2
                           THEN encode(substring({column} FROM $1 + 1 FOR $3), 'escape')
                           ELSE 'unlabelled' END AS kid, count(*) AS n
                    FROM {table.name} WHERE {column} IS NOT NULL GROUP BY 1""",
                len(SEALED_PREFIX), SEALED_PREFIX, KEY_ID_CHARS)
            for row in rows:
                per = counts.setdefault(row["kid"], {})
                per[table.name] = per.get(table.name, 0) + row["n"]
    return counts


def _status(box: SecretBox, counts: dict[str, dict[str, int]]) -> dict[str, Any]:
    current, old = box.current_key_id, box.old_key_ids
    keys = []
    for kid in sorted(set(counts) | {current, *old}):
        state = ("current" if kid == current else "old" if kid in old
                 else "unlabelled" if kid == "unlabelled" else "unknown")
        per = counts.get(kid, {})
        keys.append({"key_id": kid, "state": state, "values": sum(per.values()), "tables": per})
    # An unlabelled value may be under any retired key, so while one is left none can go.
    unlabelled = any(k["state"] == "unlabelled" and k["values"] for k in keys)
    return {
        "current_key_id": current,
        "old_key_ids": old,
        "keys": keys,
        "values_not_under_current_key": sum(k["values"] for k in keys if k["state"] != "current"),
        "old_keys_safe_to_drop": [] if unlabelled else [
            k["key_id"] for k in keys if k["state"] == "old" and k["values"] == 0],
    }


def _database_error(exc: Exception) -> SystemExit:
    if isinstance(exc, asyncpg.UndefinedTableError):
        return SystemExit(f"the database has no fnbus schema ({exc}); run `fnbus migrate` first")
    return SystemExit(f"cannot use the database: {exc}")


async def secrets_key_status(settings: Settings) -> dict[str, Any]:
    box = _keyring(settings.secrets_key, settings.secrets_old_keys)
    try:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return _status(box, await count_by_key(conn))
        finally:
            await conn.close()
    except (OSError, asyncpg.PostgresError) as exc:
        raise _database_error(exc) from None


async def reseal_all(pool: asyncpg.Pool, box: SecretBox, batch_rows: int = DEFAULT_BATCH_ROWS,
                     progress: Progress | None = None) -> dict[str, Any]:
    """Re-seal every value not under the ring's current key, in short transactions.

    Each row is visited once (keyset order on its primary key); a row locked by
    a writer is waited for, a value that no key opens is left as it is and
    counted under ``failed`` (the status command shows its key id).
    """
    from services.registry.crypto import HEADER_BYTES, SEALED_PREFIX, SealedValueError

    prefix = SEALED_PREFIX + box.current_key_id.encode() + b":"
    report: dict[str, Any] = {"key_id": box.current_key_id, "tables": {}}
    for table in SEALED_TABLES:
        keys, cols = table.key_columns, table.sealed_columns
        stale = " OR ".join(
            f"({c} IS NOT NULL AND substring({c} FROM 1 FOR {HEADER_BYTES}) <> $1)" for c in cols)
        total = await pool.fetchval(f"SELECT count(*) FROM {table.name} WHERE {stale}", prefix)
        done = failed = 0
        last: tuple[Any, ...] | None = None
        key_list = ", ".join(keys)
        after = f"AND ({key_list}) > ({', '.join(f'${i + 3}' for i in range(len(keys)))})"
        while True:
            async with pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(
                    f"""SELECT {key_list}, {', '.join(cols)} FROM {table.name}
                        WHERE ({stale}) {after if last else ''}
                        ORDER BY {key_list} LIMIT $2 FOR UPDATE""",
                    prefix, batch_rows, *(last or ()))
                for row in rows:
                    try:
                        fresh = [None if row[c] is None else box.reseal(row[c]) for c in cols]
                    except SealedValueError:
                        failed += 1
                        continue
                    sets = [(c, v) for c, v in zip(cols, fresh, strict=True) if v is not None]
                    if sets:
                        assignments = ", ".join(f"{c} = ${i + 1}" for i, (c, _) in enumerate(sets))
                        where = " AND ".join(f"{k} = ${len(sets) + i + 1}" for i, k in enumerate(keys))
                        await conn.execute(
                            f"UPDATE {table.name} SET {assignments} WHERE {where}",
                            *(v for _, v in sets), *(row[k] for k in keys))
                    done += 1
            if rows:
                last = tuple(rows[-1][k] for k in keys)
                if progress is not None:
                    progress(table.name, done + failed, max(total, done + failed))
            if len(rows) < batch_rows:
                break
        report["tables"][table.name] = {"rows": total, "resealed": done, "failed": failed}
    return report


def new_key_material(given: str | None) -> str:
    if given is None:
        return pysecrets.token_urlsafe(32)
    if len(given.strip()) < MIN_SECRET_CHARS or given != given.strip():
        raise SystemExit(f"--new-key must be at least {MIN_SECRET_CHARS} characters, "
                         "without surrounding spaces")
    return given


def install_key(env_file: Path, new_key: str, current: str, old: list[str]) -> list[str]:
    """Write the new current key and the retired ones into the env file (atomically, 0600).

    Returns the retired keys: the key that was current, then the ones retired before.
    """
    retired = [k for k in dict.fromkeys([current, *old]) if k and k != new_key]
    lines = env_file.read_text().splitlines() if env_file.exists() else []
    kept = [line for line in lines
            if not line.lstrip().startswith(("FNBUS_SECRETS_KEY=", "FNBUS_SECRETS_OLD_KEYS="))]
    kept += [f"FNBUS_SECRETS_KEY={new_key}",
             f"FNBUS_SECRETS_OLD_KEYS='{json.dumps(retired)}'"]
    env_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = env_file.with_name(env_file.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(kept) + "\n")
    os.replace(tmp, env_file)
    return retired


async def rotate_secrets_key(args: argparse.Namespace, settings: Settings,
                             progress: Progress | None = _stderr_progress) -> dict[str, Any]:
    """``fnbus admin rotate-secrets-key`` (docs/secrets-rotation.md)."""
    import asyncio

    current, old = settings.secrets_key, list(settings.secrets_old_keys)
    # Look at the database before touching any key: a rotation that cannot re-seal
    # should not leave a new key behind.
    await secrets_key_status(settings)
    if not args.reseal_only:
        if "FNBUS_SECRETS_KEY" in os.environ:
            raise SystemExit(
                "FNBUS_SECRETS_KEY comes from the environment, which wins over the env file: "
                "set the new key there (and the old one in FNBUS_SECRETS_OLD_KEYS) for every "
                "service, restart them, then run this command with --reseal-only")
        env_file = args.env_file or Path(settings.home) / "secrets.env"
        new_key = new_key_material(args.new_key)
        old = install_key(env_file, new_key, current, old)
        current = new_key
        if progress is not None:
            print(f"installed a new secrets key in {env_file}; waiting {args.reload_wait_s:g} s "
                  "for the services to reload it", file=sys.stderr, flush=True)
        await asyncio.sleep(args.reload_wait_s)
    box = _keyring(current, old)
    try:
        pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
        try:
            report = await reseal_all(pool, box, max(1, args.batch_size), progress)
            async with pool.acquire() as conn:
                report["status"] = _status(box, await count_by_key(conn))
        finally:
            await pool.close()
    except (OSError, asyncpg.PostgresError) as exc:
        raise SystemExit(f"{_database_error(exc)}; the key change stays, rerun with "
                         "--reseal-only once the database is back") from None
    return report
