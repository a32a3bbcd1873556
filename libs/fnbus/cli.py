"""The ``fnbus`` command.

Operator commands (``serve``, ``migrate``, ``topics``, ``local``, ``admin``) are parsed
here with argparse, as they always were; every other command belongs to the developer
CLI (:mod:`fnbus.devcli`, typer), so ``fnbus serve gateway`` and ``fnbus deploy hello``
are the same program.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Sequence

from fnbus import priority
from fnbus.config import SERVICE_NAMES, Settings


def _serve(args: argparse.Namespace) -> int:
    from fnbus.logs import setup_logging
    from fnbus.service import serve

    # --instance-id wins over FNBUS_INSTANCE_ID: `fnbus local start` names each replica
    # on its command line, so the pid's cmdline says which replica it is.
    settings = Settings(**({"instance_id": args.instance_id} if args.instance_id else {}))
    setup_logging(args.service, settings.log_level, settings.log_json)
    priority.apply(args.service, settings.background_nice)
    module = importlib.import_module(f"services.{args.service}.app")
    app = module.create_app(settings)
    port = args.port or settings.port_of(args.service)
    serve(app, settings.bind_host, port, shared_port=args.shared_port)
    return 0


def _migrate(_: argparse.Namespace) -> int:
    from fnbus.db import apply_migrations

    async def run() -> list[int]:
        import asyncpg

        conn = await asyncpg.connect(Settings().database_url)
        try:
            return await apply_migrations(conn)
        finally:
            await conn.close()

    applied = asyncio.run(run())
    print(f"applied migrations: {applied}" if applied else "schema is up to date")
    return 0


def _topics(_: argparse.Namespace) -> int:
    from fnbus.topics import Topics, ensure_topics

    settings = Settings()
    created = asyncio.run(ensure_topics(settings.kafka_bootstrap, Topics(settings.topic_prefix).specs()))
    print(f"created topics: {', '.join(created)}" if created else "all topics exist")
    return 0


def _local(args: argparse.Namespace) -> int:
    from fnbus import local

    return local.main(args.action, Settings(), services=args.services)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fnbus", description="fnbus: Functions-as-a-Service")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run one service in the foreground")
    p.add_argument("service", choices=SERVICE_NAMES)
    p.add_argument("--port", type=int, default=None, help="this process's own port")
    p.add_argument("--shared-port", type=int, default=None,
                   help="also serve on this port, shared with other replicas (SO_REUSEPORT)")
    p.add_argument("--instance-id", default=None, help="overrides FNBUS_INSTANCE_ID")
    p.set_defaults(func=_serve)

    p = sub.add_parser("migrate", help="apply pending database migrations")
    p.set_defaults(func=_migrate)

    p = sub.add_parser("topics", help="create the Kafka topics that are missing")
    p.set_defaults(func=_topics)

    p = sub.add_parser("local", help="start/stop the six services as local processes "
                                      "(FNBUS_INVOKERS / FNBUS_GATEWAYS replicas)")
    p.add_argument("action", choices=("start", "stop", "status"))
    p.add_argument("services", nargs="*", default=[], help="default: all six")
    p.set_defaults(func=_local)

    from fnbus import admin

    admin.add_parser(sub)
    return parser


#: First words that select an operator command (the argparse parser below).
OPERATOR_COMMANDS = frozenset({"serve", "migrate", "topics", "local", "admin"})


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if not words or words[0] not in OPERATOR_COMMANDS:
        from fnbus.devcli.app import run

        return run(words)
    parser = build_parser()
    args = parser.parse_args(words)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
