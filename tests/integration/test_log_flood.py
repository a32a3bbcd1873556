"""Lambdas that flood logs or forge runner frames are contained (issue 11, defect 6).

The lambda's code shares the runner's process, so besides flooding
``console.log`` it can find the runner's connection to the host and write
frames of its own. Documented behaviour (libs/fnbus/runner_protocol.py): the
host keeps at most the log budget (10 entries / 6,000 characters, plus one
truncation marker) whatever it is sent, and a runner that sends frames for
other ids or without end loses its container; the platform answers the next
calls as before.
"""

from __future__ import annotations

from typing import Any

import pytest

from fnbus.config import Settings
from fnbus.runner_protocol import DEFAULT_LOG_MAX_CHARS, DEFAULT_LOG_MAX_ENTRIES, MARKER_MAX_CHARS
from fnbus.schemas import ErrorCode
from tests.integration.invoke_support import deploy, invoke
from tests.integration.mgmt_support import create_account
from tests.support import eventually

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("platform")]

FLOOD = """function lambda(input, callback) {
  for (let i = 0; i < 200000; i++) console.log('spam ' + i + ' ' + 'x'.repeat(50));
  callback(null, 'flooded');
}
"""

# Finds the runner's socket to the host (the accepted connection of its server), learns the
# activation id from the runner's own first log frame, then writes frames itself.
FORGER = """function lambda(input, callback) {
  const net = require('net');
  const sock = process._getActiveHandles().find((h) => h instanceof net.Socket && h.server);
  if (!sock) return callback(null, 'no socket');
  const frame = (m) => {
    const body = Buffer.from(JSON.stringify(m));
    const head = Buffer.alloc(4);
    head.writeUInt32BE(body.length);
    return Buffer.concat([head, body]);
  };
  const write = sock.write.bind(sock);
  let id = null;
  sock.write = (buf, ...rest) => {
    if (id === null) { try { id = JSON.parse(buf.subarray(4).toString()).id; } catch (e) {} }
    return write(buf, ...rest);
  };
  console.log('probe');
  sock.write = write;
  const mode = input.payload.mode;
  const count = input.payload.count;
  for (let i = 0; i < count; i++) {
    if (mode === 'logs') {
      write(frame({type: 'log', id, level: 'log', message: 'forged ' + i + ' ' + 'y'.repeat(500), ts_ms: Date.now()}));
    } else {
      write(frame({type: 'result', id: 'someone-else-' + i, ok: true, value: 'forged', duration_ms: 1}));
    }
  }
  callback(null, {id, wrote: count});
}
"""

ECHO = "function lambda(input, callback) { callback(null, {echo: input.payload}); }\n"


def assert_bounded(logs: list[dict[str, Any]]) -> None:
    assert len(logs) <= DEFAULT_LOG_MAX_ENTRIES + 1, len(logs)
    kept = logs[:-1] if logs and logs[-1]["message"].startswith("Log limit reached") else logs
    assert sum(len(e["message"]) for e in kept) <= DEFAULT_LOG_MAX_CHARS
    assert all(len(e["message"]) <= MARKER_MAX_CHARS for e in logs[len(kept):])


async def test_a_console_flood_keeps_the_budget_and_the_platform_answers(
    settings: Settings, gateway_url: str, run_id: str,
) -> None:
    account = await create_account(settings, gateway_url, f"logflood{run_id}")
    flood = await deploy(account, "flood", FLOOD)
    echo = await deploy(account, "echo", ECHO)

    r = await invoke(account, flood)
    assert r.status_code == 200, r.text[:500]
    body = r.json()
    assert body["result"] == "flooded" and body["logs_truncated"] is True
    assert_bounded(body["logs"])
    assert body["logs"][0]["message"].startswith("spam 0 ")

    # What log-ingest stored for it is bounded the same way.
    async with account.client() as c:
        async def stored() -> list[dict[str, Any]] | None:
            got = await c.get(f"/activations/{body['activation_id']}/logs")
            items = got.json().get("items", []) if got.status_code == 200 else []
            return items if len(items) == len(body["logs"]) else None

        assert_bounded(await eventually(stored, timeout_s=30, what="the stored log lines"))

    r = await invoke(account, echo, {"after": "flood"})
    assert r.status_code == 200 and r.json()["result"] == {"echo": {"after": "flood"}}, r.text


async def test_forged_frames_are_bounded_or_end_the_container(
    settings: Settings, gateway_url: str, run_id: str,
) -> None:
    account = await create_account(settings, gateway_url, f"forger{run_id}")
    forger = await deploy(account, "forger", FORGER)
    echo = await deploy(account, "echo", ECHO)

    # 3,000 log frames for its own activation, 1.5 MB of them: the host keeps the budget.
    r = await invoke(account, forger, {"mode": "logs", "count": 3000})
    assert r.status_code == 200, r.text[:500]
    body = r.json()
    assert body["result"]["wrote"] == 3000 and body["result"]["id"] == body["activation_id"], \
        "the lambda did not reach the runner's socket"
    assert body["logs_truncated"] is True
    assert_bounded(body["logs"])
    assert "the host dropped" in body["logs"][-1]["message"]

    # Forged results for other activations: ignored a few times, then the runner is done for.
    r = await invoke(account, forger, {"mode": "results", "count": 500})
    assert r.status_code == 502, r.text[:500]
    assert r.json()["error"]["code"] == ErrorCode.RUNTIME_EXCEPTION
    assert "other ids" in r.json()["error"]["message"]

    # A frame flood past the per-invocation ceiling ends the container the same way.
    r = await invoke(account, forger, {"mode": "logs", "count": 6000})
    assert r.status_code == 502, r.text[:500]
    assert "frames" in r.json()["error"]["message"]

    # The platform, and this lambda on a new container, answer as before.
    r = await invoke(account, forger, {"mode": "logs", "count": 0})
    assert r.status_code == 200 and r.json()["result"]["wrote"] == 0, r.text[:500]
    r = await invoke(account, echo, {"after": "forgery"})
    assert r.status_code == 200 and r.json()["result"] == {"echo": {"after": "forgery"}}, r.text
