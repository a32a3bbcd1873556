"""ASGI middleware: refuse request bodies above a size before anything parses them."""

from __future__ import annotations

import json
from typing import Any

from fnbus.errors import PayloadTooLarge

Scope = dict[str, Any]


class BodyLimit:
    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _body(self) -> bytes:
        return json.dumps({"error": {
            "code": "payload_too_large",
            "message": f"request body exceeds {self.max_bytes:,} bytes",
        }}).encode()

    async def _refuse(self, send: Any) -> None:
        body = self._body()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await self._refuse(send)
                    return
        # Chunked bodies: count as they arrive.
        seen = 0

        async def limited_receive() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # The app's ApiError handler turns this into the same 413.
                    raise PayloadTooLarge(f"request body exceeds {self.max_bytes:,} bytes")
            return message

        await self.app(scope, limited_receive, send)
