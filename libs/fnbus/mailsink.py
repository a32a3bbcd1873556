"""A local SMTP sink: every mail received is kept as an ``.eml`` file, nothing is relayed.

``make up`` runs it (``deploy/local/infra.sh``, component ``mail``) on
127.0.0.1:``smtp_port`` (8025), writing to ``$FNBUS_HOME/mail/``, so email reports
travel over real SMTP on one machine::

    python -m fnbus.mailsink [--host 127.0.0.1] [--port 8025] [--dir .fnbus/mail]

Each file is ``<UTC time>-<uuid>.eml``: the message as received, after two headers
that record the envelope (``X-Envelope-From``, ``X-Envelope-To``). Files appear
atomically (written, then renamed), so a reader never sees half a mail.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import uuid
from datetime import UTC, datetime
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session

from fnbus.config import Settings

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 32 * 1024 * 1024


class EmlHandler:
    """aiosmtpd handler: DATA → one .eml file in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope  # noqa: N802
                          ) -> str:
        content = envelope.original_content or b""
        head = (f"X-Envelope-From: {envelope.mail_from}\r\n"
                f"X-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n").encode()
        name = f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:12]}.eml"
        tmp = self.directory / f".{name}.tmp"
        tmp.write_bytes(head + content)
        os.replace(tmp, self.directory / name)
        log.info("mail kept", extra={"file": name, "recipients": len(envelope.rcpt_tos)})
        return "250 Message accepted for delivery"


async def serve(host: str, port: int, directory: Path, stop: asyncio.Event) -> None:
    handler = EmlHandler(directory)
    loop = asyncio.get_running_loop()

    def factory() -> SMTP:
        return SMTP(handler, data_size_limit=MAX_MESSAGE_BYTES, enable_SMTPUTF8=True,
                    hostname="fnbus-mailsink")

    server = await loop.create_server(factory, host, port)
    print(f"mailsink: listening on {host}:{port}, keeping mail in {directory}", flush=True)
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()


def main(argv: list[str] | None = None) -> int:
    settings = Settings()
    parser = argparse.ArgumentParser(prog="fnbus.mailsink", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default=settings.smtp_host)
    parser.add_argument("--port", type=int, default=settings.smtp_port)
    parser.add_argument("--dir", type=Path, default=settings.home / "mail")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await serve(args.host, args.port, args.dir, stop)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
