"""Hostile lambdas on the real platform: each is contained, and another tenant does not notice.

Issue 11, "Suites that keep it true → Hostile lambdas". One Node lambda of the
attacker's account carries every attack, chosen by ``payload.mode``; an echo
lambda of another account is the bystander whose latency is measured before the
suite and after every case (median of a few sequential calls; the bound is
generous on purpose: the machine is shared, what we catch is a platform that
stalls or crawls). A third account's lambda holds a marker in its environment
that no other tenant may see.

Covered elsewhere, not repeated here: a huge result
(``test_oversized_result.py``), a console flood and forged runner frames
(``test_log_flood.py``), the 30 s limit itself (``test_invoke_e2e.py``, slow).

A timer left by one invocation never logs into the next invocation of the same
container: the Node runner binds output to the invocation that created it. About
40 s here; nothing is slow.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import statistics
import time
from typing import Any

import docker
import httpx
import pytest

from fnbus.config import Settings
from fnbus.schemas import ErrorCode
from tests.integration.invoke_support import deploy, invoke
from tests.integration.mgmt_support import Account, create_account
from tests.support import eventually

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("platform")]

ATTACKER = r"""function lambda(input, callback) {
  const fs = require('fs');
  const net = require('net');
  const cp = require('child_process');
  const mode = input.payload.mode;
  const tryCode = (f) => { try { return f(); } catch (e) { return e.code || String(e); } };

  if (mode === 'echo') {
    const answer = () => callback(null, { echo: input.payload.value });
    return input.payload.delay_ms ? setTimeout(answer, input.payload.delay_ms) : answer();
  }

  if (mode === 'fork') {
    // The shell's fork bomb, in the background; then see whether anything can start.
    cp.spawn('/bin/sh', ['-c', 'f() { f | f & }; f'], { detached: true, stdio: 'ignore' })
      .on('error', () => {});
    let most = 0;
    const count = setInterval(() => {
      most = Math.max(most, fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p)).length);
    }, 50);
    return setTimeout(() => {
      clearInterval(count);
      callback(null, { mostProcesses: most });
    }, 2000);
  }

  if (mode === 'orphan') {
    cp.spawn('/bin/sh', ['-c', 'while :; do :; done'], { detached: true, stdio: 'ignore' }).unref();
    return callback(null, { container: require('os').hostname() });
  }

  if (mode === 'hog') {
    const chunks = [];
    while (true) chunks.push(Buffer.alloc(16 * 1024 * 1024, 1));
  }

  if (mode === 'spin') {
    const { Worker } = require('worker_threads');
    for (let i = 0; i < 2; i++) new Worker('while (true) {}', { eval: true });
    while (true) {}
  }

  if (mode === 'disk') {
    const out = {};
    const chunk = Buffer.alloc(1024 * 1024, 120);
    let written = 0;
    out.tmp = tryCode(() => {
      const fd = fs.openSync('/tmp/fill', 'w');
      try { for (let i = 0; i < 1024; i++) { fs.writeSync(fd, chunk); written += chunk.length; } }
      finally { fs.closeSync(fd); }
      return 'no error';
    });
    out.tmpMb = Math.round(written / 1048576);
    tryCode(() => fs.unlinkSync('/tmp/fill'));
    for (const dir of ['/', '/etc', '/var/tmp', '/home', '/opt', process.cwd()]) {
      out[dir] = tryCode(() => { fs.writeFileSync(dir.replace(/\/?$/, '/fill'), chunk); return 'written'; });
    }
    return callback(null, out);
  }

  if (mode === 'promise') return new Promise(() => {});

  if (mode === 'timebomb') {
    callback(null, 'armed');
    setInterval(() => {
      console.log('tick from the previous invocation');
      callback(null, 'hijacked');
    }, 20);
    return;
  }

  if (mode === 'snoop') {
    const out = { env: process.env, procs: {} };
    for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
      out.procs[pid] = {
        cmdline: tryCode(() => fs.readFileSync(`/proc/${pid}/cmdline`).toString().split('\0').join(' ')),
        environ: tryCode(() => fs.readFileSync(`/proc/${pid}/environ`).toString().split('\0')),
      };
    }
    out.environ1 = tryCode(() => fs.readFileSync('/proc/1/environ').toString().split('\0'));
    out.hostname = require('os').hostname();
    return callback(null, out);
  }

  if (mode === 'sockets') {
    const targets = [['tcp', '127.0.0.1', 9092], ['tcp', '127.0.0.1', 5432],
                     ['tcp', '169.254.169.254', 80], ['unix', '/var/run/docker.sock'],
                     ['unix', '/run/docker.sock']];
    const out = { dockerSocket: fs.existsSync('/var/run/docker.sock') || fs.existsSync('/run/docker.sock') };
    let left = targets.length;
    for (const t of targets) {
      const name = t.slice(1).join(':');
      const s = t[0] === 'unix' ? net.connect({ path: t[1] }) : net.connect({ host: t[1], port: t[2] });
      s.setTimeout(3000);
      const done = (what) => {
        if (out[name] !== undefined) return;
        out[name] = what;
        s.destroy();
        if (--left === 0) callback(null, out);
      };
      s.on('connect', () => done('connected'));
      s.on('timeout', () => done('timeout'));
      s.on('error', (e) => done(e.code));
    }
    return;
  }

  if (mode === 'egress') {
    const { Toolbelt } = require('lp-faas-toolbelt');
    const http = Toolbelt.HTTPClient();
    const urls = ['http://127.0.0.1:9092/', 'http://127.0.0.1:5432/',
                  'http://169.254.169.254/latest/meta-data/', 'http://[::1]:9092/'];
    return Promise.all(urls.map((u) => http({ method: 'GET', uri: u })
        .then(() => 'reached', (e) => e.code || e.name || String(e))))
      .then((codes) => {
        const out = {};
        urls.forEach((u, i) => { out[u] = codes[i]; });
        callback(null, out);
      });
  }

  callback(new Error('unknown mode ' + mode));
}
"""

ECHO = "function lambda(input, callback) { callback(null, {echo: input.payload}); }\n"
MARKED = "function lambda(input, callback) { callback(null, {marker: process.env.TENANT_MARKER}); }\n"

#: The bystander may be this much slower after a case than before the suite.
LATENCY_FACTOR = 3.0
LATENCY_SLACK_S = 0.3


class Bystander:
    """Another account's echo lambda, timed."""

    def __init__(self, account: Account, lambda_id: str) -> None:
        self.account, self.lambda_id = account, lambda_id
        self.baseline_s = 0.0

    async def median_s(self, calls: int) -> float:
        times = []
        for i in range(calls):
            started = time.monotonic()
            r = await invoke(self.account, self.lambda_id, {"n": i})
            times.append(time.monotonic() - started)
            assert r.status_code == 200 and r.json()["result"] == {"echo": {"n": i}}, r.text[:300]
        return statistics.median(times)

    async def still_fine(self, case: str) -> None:
        after = await self.median_s(5)
        bound = self.baseline_s * LATENCY_FACTOR + LATENCY_SLACK_S
        print(f"\n[hostile] {case}: bystander echo median {after * 1000:.1f} ms after "
              f"(baseline {self.baseline_s * 1000:.1f} ms, bound {bound * 1000:.0f} ms)")
        assert after <= bound, f"{case}: bystander slowed from {self.baseline_s:.3f} s to {after:.3f} s"


@pytest.fixture(scope="module")
async def attacker(settings: Settings, gateway_url: str, run_id: str) -> tuple[Account, str]:
    account = await create_account(settings, gateway_url, f"attacker{run_id}")
    return account, await deploy(account, "attacker", ATTACKER)


@pytest.fixture(scope="module")
async def bystander(settings: Settings, gateway_url: str, run_id: str) -> Bystander:
    account = await create_account(settings, gateway_url, f"bystander{run_id}")
    echo = Bystander(account, await deploy(account, "echo", ECHO))
    await echo.median_s(3)  # warm
    echo.baseline_s = await echo.median_s(10)
    print(f"\n[hostile] bystander baseline: echo median {echo.baseline_s * 1000:.1f} ms")
    return echo


@pytest.fixture(scope="module")
async def neighbour(settings: Settings, gateway_url: str, run_id: str) -> tuple[Account, str, str]:
    """A third tenant with a secret in its lambda's environment, its container kept warm."""
    account = await create_account(settings, gateway_url, f"neighbour{run_id}")
    marker = "neighbour-marker-" + secrets.token_hex(8)
    lambda_id = await deploy(account, "marked", MARKED, env={"TENANT_MARKER": marker})
    r = await invoke(account, lambda_id, {})
    assert r.status_code == 200 and r.json()["result"] == {"marker": marker}, r.text
    return account, lambda_id, marker


async def attack(attacker: tuple[Account, str], mode: str, timeout_ms: int = 10_000,
                 **payload: Any) -> Any:
    account, lambda_id = attacker
    return await invoke(account, lambda_id, {"mode": mode, **payload}, timeout_ms=timeout_ms)


async def test_fork_bomb(attacker: tuple[Account, str], bystander: Bystander,
                         settings: Settings) -> None:
    r = await attack(attacker, "fork", timeout_ms=8000)
    # The pids limit holds the swarm (the lambda counts what it sees in /proc), or the call is cut.
    # The runner is PID 1 and reaps nothing, so the swarm ends as zombies holding the container's
    # pids: no CPU, and only this lambda's container is affected.
    assert r.status_code in (200, 502, 504), r.text[:500]
    if r.status_code == 200:
        most = r.json()["result"]["mostProcesses"]
        print(f"\n[hostile] fork bomb: at most {most} processes seen in the container")
        assert 10 < most <= settings.lambda_pids_limit, most
    await bystander.still_fine("fork bomb")
    r = await attack(attacker, "echo", value="after fork bomb")
    assert r.status_code == 200 and r.json()["result"] == {"echo": "after fork bomb"}, r.text[:500]


async def test_a_process_left_running_after_the_callback_ends_with_its_container(
        attacker: tuple[Account, str], bystander: Bystander) -> None:
    r = await attack(attacker, "orphan")
    assert r.status_code == 200, r.text[:500]
    container = r.json()["result"]["container"]
    # A busy loop in a detached child would idle in the warm container for minutes;
    # the pool notices the extra process and removes the container within a reap round.
    await eventually(lambda: _gone_or_clean(container), timeout_s=20, interval_s=0.5,
                     what="the container with the leftover process removed")
    await bystander.still_fine("process left running after the callback")
    r = await attack(attacker, "echo", value="after the orphan")
    assert r.status_code == 200 and r.json()["result"] == {"echo": "after the orphan"}, r.text[:500]


async def _gone_or_clean(container: str) -> bool:
    """True when ``container`` is gone or runs nothing but its runner."""
    def look() -> bool:
        client = docker.from_env()
        try:
            top = client.api.top(container)
        except docker.errors.NotFound:
            return True
        except docker.errors.APIError:
            return False  # stopping: look again
        finally:
            client.close()
        print(f"[hostile] container {container}: {len(top.get('Processes') or [])} processes")
        return len(top.get("Processes") or []) <= 1

    return await asyncio.to_thread(look)


async def test_memory_hog(attacker: tuple[Account, str], bystander: Bystander) -> None:
    r = await attack(attacker, "hog", timeout_ms=15_000)
    assert r.status_code == 502, r.text[:500]
    assert "memory limit (256 MB)" in r.json()["error"]["message"], r.text[:500]
    await bystander.still_fine("memory hog")


async def test_cpu_spin_in_three_threads_is_killed_at_the_limit(
        attacker: tuple[Account, str], bystander: Bystander) -> None:
    started = time.monotonic()
    r = await attack(attacker, "spin", timeout_ms=3000)
    elapsed = time.monotonic() - started
    assert r.status_code == 504, r.text[:500]
    assert r.json()["error"]["code"] == ErrorCode.TIMEOUT
    assert elapsed < 10, elapsed
    await bystander.still_fine("CPU spin")
    # The killed container is not reused.
    r = await attack(attacker, "echo", value=1)
    assert r.status_code == 200 and r.json()["cold_start"] is True, r.text[:500]


async def test_disk_fill_stops_at_the_tmpfs_and_the_root_is_read_only(
        attacker: tuple[Account, str], bystander: Bystander, settings: Settings) -> None:
    r = await attack(attacker, "disk", timeout_ms=20_000)
    assert r.status_code == 200, r.text[:500]
    out = r.json()["result"]
    assert out["tmp"] == "ENOSPC" and out["tmpMb"] <= settings.lambda_tmpfs_mb, out
    for path in ("/", "/etc", "/var/tmp", "/home", "/opt"):
        assert out[path] in ("EROFS", "EACCES", "ENOENT"), (path, out)
    assert "written" not in out.values(), out
    await bystander.still_fine("disk fill")


async def test_a_never_ending_promise_times_out(attacker: tuple[Account, str],
                                                bystander: Bystander) -> None:
    started = time.monotonic()
    r = await attack(attacker, "promise", timeout_ms=2000)
    elapsed = time.monotonic() - started
    assert r.status_code == 504, r.text[:500]
    assert r.json()["error"]["code"] == ErrorCode.TIMEOUT
    assert 1.9 <= elapsed < 10, elapsed
    await bystander.still_fine("never-ending promise")


async def test_a_time_bomb_after_the_callback_does_not_reach_the_next_invocation(
        attacker: tuple[Account, str], bystander: Bystander) -> None:
    r = await attack(attacker, "timebomb")
    assert r.status_code == 200 and r.json()["result"] == "armed", r.text[:500]
    await asyncio.sleep(0.3)  # let the timer fire while the container waits for its next call
    for i in range(3):
        # Each call lasts 300 ms in the same container, so the 20 ms timer fires during it.
        r = await attack(attacker, "echo", value=i, delay_ms=300)
        assert r.status_code == 200, r.text[:500]
        body = r.json()
        assert body["cold_start"] is False, "the case needs the same container"
        assert body["result"] == {"echo": i}, body
        assert not any("tick" in e["message"] for e in body["logs"]), body["logs"]
    await bystander.still_fine("time bomb after the callback")


def _flatten(value: Any) -> str:
    return json.dumps(value)


async def test_proc_and_environment_show_no_other_tenant(
        attacker: tuple[Account, str], bystander: Bystander, settings: Settings,
        neighbour: tuple[Account, str, str]) -> None:
    account, _ = attacker
    other, other_lambda, marker = neighbour
    r = await attack(attacker, "snoop")
    assert r.status_code == 200, r.text[:500]
    out = r.json()["result"]
    seen = _flatten(out)
    assert marker not in seen
    assert other.id not in seen and other_lambda not in seen
    assert bystander.account.id not in seen and bystander.lambda_id not in seen
    # Nor anything of the platform's: its secrets, its settings, the other processes.
    for secret in (settings.service_token, settings.jwt_secret, settings.secrets_key):
        assert secret not in seen
    assert not any(k.startswith("FNBUS_") and k != "FNBUS_RUNNER_SOCKET" for k in out["env"]), out["env"]
    assert out["env"].get("BRAND_ID") == account.id
    cmdlines = [p["cmdline"] for p in out["procs"].values()]
    assert len(out["procs"]) <= 3, cmdlines  # its own runner (and the reading process)
    assert not any("fnbus" in c and "serve" in c for c in cmdlines), cmdlines
    await bystander.still_fine("/proc and environment")


async def test_raw_sockets_reach_nothing(attacker: tuple[Account, str], bystander: Bystander) -> None:
    r = await attack(attacker, "sockets")
    assert r.status_code == 200, r.text[:500]
    out = r.json()["result"]
    assert out.pop("dockerSocket") is False
    assert "connected" not in out.values(), out
    assert out["/var/run/docker.sock"] == "ENOENT" and out["/run/docker.sock"] == "ENOENT", out
    for target in ("127.0.0.1:9092", "127.0.0.1:5432", "169.254.169.254:80"):
        assert out[target] in ("ECONNREFUSED", "ENETUNREACH", "EHOSTUNREACH"), out
    await bystander.still_fine("raw sockets")


async def test_toolbelt_http_is_refused_by_the_egress_policy(
        attacker: tuple[Account, str], bystander: Bystander) -> None:
    r = await attack(attacker, "egress")
    assert r.status_code == 200, r.text[:500]
    out = r.json()["result"]
    assert set(out.values()) == {"address_refused"}, out
    await bystander.still_fine("toolbelt HTTP to the platform and metadata")


async def test_the_attacker_the_neighbour_and_the_services_still_work(
        attacker: tuple[Account, str], neighbour: tuple[Account, str, str],
        platform: dict[str, str]) -> None:
    r = await attack(attacker, "echo", value="end")
    assert r.status_code == 200 and r.json()["result"] == {"echo": "end"}, r.text[:500]
    other, other_lambda, marker = neighbour
    r = await invoke(other, other_lambda, {})
    assert r.status_code == 200 and r.json()["result"] == {"marker": marker}, r.text[:500]
    async with httpx.AsyncClient(timeout=10) as c:
        for service in ("gateway", "registry", "invoker", "deployer", "log_ingest"):
            r = await c.get(f"{platform[service]}/healthz")
            assert r.status_code == 200, (service, r.text)
