"""The benchmark harness's pure helpers: percentiles, targets, table, JSON, wrk and metrics parsing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench import cpu, metrics, wrk
from bench.stats import (
    Figure,
    Summary,
    Target,
    at_least,
    at_most,
    build_report,
    format_number,
    format_table,
    format_target,
    median,
    percentile,
    summarize,
    summary_figures,
    verdict,
)

# --------------------------------------------------------------------------- percentiles


def test_percentile_interpolates_between_closest_ranks() -> None:
    samples = [1, 2, 3, 4]
    assert percentile(samples, 0) == 1
    assert percentile(samples, 100) == 4
    assert percentile(samples, 50) == 2.5
    assert percentile(samples, 25) == pytest.approx(1.75)
    assert percentile(samples, 99) == pytest.approx(3.97)


def test_percentile_ignores_input_order_and_handles_one_sample() -> None:
    assert percentile([9, 1, 5], 50) == 5
    assert percentile([7.5], 99) == 7.5
    assert median([3, 1, 2, 10]) == 2.5


def test_percentile_of_1_to_100() -> None:
    samples = list(range(1, 101))
    assert percentile(samples, 50) == pytest.approx(50.5)
    assert percentile(samples, 95) == pytest.approx(95.05)
    assert percentile(samples, 99) == pytest.approx(99.01)


@pytest.mark.parametrize("q", [-1, 100.5, math.nan])
def test_percentile_rejects_out_of_range(q: float) -> None:
    with pytest.raises(ValueError):
        percentile([1, 2], q)


def test_percentile_and_summary_reject_empty() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        summarize([])


def test_summarize() -> None:
    s = summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (s.n, s.min, s.max, s.mean, s.p50) == (5, 1.0, 5.0, 3.0, 3.0)
    assert s.p95 == pytest.approx(4.8)
    assert s.p99 == pytest.approx(4.96)
    assert s.to_dict(1) == {"n": 5, "min": 1.0, "mean": 3.0, "p50": 3.0, "p95": 4.8, "p99": 5.0, "max": 5.0}


def test_summary_without_minimum_serialises() -> None:
    s = Summary(n=10, min=None, mean=2.0, p50=1.5, p95=3.0, p99=4.0, max=5.0)
    assert s.to_dict()["min"] is None


# --------------------------------------------------------------------------- targets and figures


def test_targets() -> None:
    assert at_most(10).met_by(10) and at_most(10).met_by(9.99) and not at_most(10).met_by(10.01)
    assert at_least(300).met_by(300) and not at_least(300).met_by(299.9)
    with pytest.raises(ValueError):
        Target("<", 1)


def test_figure_status_and_dict() -> None:
    ok = Figure("warm_c1_p50", "warm", "p50", 8.123456, "ms", "httpx", at_most(10))
    bad = Figure("throughput", "tp", "rps", 250.0, "req/s", "wrk", at_least(300), note="slow")
    info = Figure("floor", "floors", "runner", 0.2, "ms", "RunnerConnection")
    broken = Figure("cold", "cold", "cold", None, "ms", "httpx", at_most(100), note="failed")
    assert [f.status for f in (ok, bad, info, broken)] == ["pass", "FAIL", "-", "error"]
    d = ok.to_dict()
    assert d == {"key": "warm_c1_p50", "section": "warm", "label": "p50", "value": 8.123, "unit": "ms",
                 "target": {"op": "<=", "value": 10}, "pass": True, "status": "pass", "tool": "httpx",
                 "note": "", "details": {}}
    assert bad.to_dict()["pass"] is False and bad.to_dict()["status"] == "fail"
    assert info.to_dict()["pass"] is None and info.to_dict()["target"] is None
    assert broken.to_dict()["value"] is None and broken.to_dict()["status"] == "error"


def test_summary_figures_one_per_percentile_with_targets() -> None:
    s = summarize([float(x) for x in range(1, 101)])
    figs = summary_figures("warm_c1", "warm", "concurrency 1,", s, "ms", "httpx",
                           targets={"p50": at_most(10), "p99": at_most(40)}, note="n=100",
                           details={"calls": 100})
    assert [f.key for f in figs] == ["warm_c1_p50", "warm_c1_p95", "warm_c1_p99"]
    assert [f.label for f in figs] == ["concurrency 1, p50", "concurrency 1, p95", "concurrency 1, p99"]
    assert figs[0].value == pytest.approx(50.5) and figs[0].status == "FAIL"
    assert figs[1].target is None and figs[1].status == "-"
    assert figs[2].status == "FAIL"
    assert figs[0].note == "n=100" and figs[1].note == ""
    assert figs[0].details["calls"] == 100 and figs[0].details["summary"]["n"] == 100
    assert figs[1].details == {}


def test_summary_figures_without_summary_are_errors() -> None:
    figs = summary_figures("k", "s", "x", None, "ms", "t", which=("p50", "p99"), note="boom")
    assert [f.status for f in figs] == ["error", "error"]
    assert figs[0].note == "boom"


# --------------------------------------------------------------------------- formatting


@pytest.mark.parametrize(("value", "unit", "text"), [
    (3.14159, "ms", "3.14 ms"),
    (22.06, "ms", "22.1 ms"),
    (1160.4, "ms", "1160 ms"),
    (1.923, "s", "1.92 s"),
    (282.4, "req/s", "282 req/s"),
    (None, "ms", "—"),
    (4.0, "", "4"),
    (2.5, "x", "2.50 x"),
])
def test_format_number(value: float | None, unit: str, text: str) -> None:
    assert format_number(value, unit) == text


def test_format_target() -> None:
    assert format_target(at_most(10), "ms") == "≤ 10.0 ms"
    assert format_target(at_least(300), "req/s") == "≥ 300 req/s"
    assert format_target(None, "ms") == ""


def _figures() -> list[Figure]:
    return [
        Figure("warm_c1_p50", "warm sync latency", "concurrency 1, p50", 8.0, "ms", "httpx", at_most(10)),
        Figure("warm_c1_p99", "warm sync latency", "concurrency 1, p99", 45.0, "ms", "httpx", at_most(40),
               note="under load"),
        Figure("throughput", "throughput", "invocations per second", 310.0, "req/s", "wrk", at_least(300)),
        Figure("floor_docker_run", "floors", "docker run", None, "ms", "docker CLI", note="docker missing"),
    ]


def test_format_table_groups_sections_and_aligns_columns() -> None:
    table = format_table(_figures())
    lines = table.splitlines()
    assert lines[0].split() == ["figure", "value", "target", "result", "tool"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2] == "[warm sync latency]"
    assert "[throughput]" in lines and "[floors]" in lines
    row = next(line for line in lines if line.startswith("concurrency 1, p99"))
    assert "45.0 ms" in row and "≤ 40.0 ms" in row and "FAIL" in row and row.endswith("httpx")
    row = next(line for line in lines if line.startswith("invocations per second"))
    assert "310 req/s" in row and "pass" in row
    row = next(line for line in lines if line.startswith("docker run"))
    assert "—" in row and "error" in row
    # The value column is right-aligned: every value ends in the same column.
    value_ends = {line.index(" ms") + 3 for line in lines if line.startswith("concurrency 1,")}
    assert len(value_ends) == 1
    assert lines[-3:] == ["notes:", "  concurrency 1, p99: under load", "  docker run: docker missing"]


def test_format_table_without_notes() -> None:
    table = format_table(_figures()[:1])
    assert "notes:" not in table
    assert table.splitlines()[-1].startswith("concurrency 1, p50")


def test_verdict_and_report_are_json() -> None:
    figs = _figures()
    assert verdict(figs) == {"pass": 2, "fail": 1, "no_target": 0, "error": 1}
    report = build_report(figs, machine={"cores": 2, "date": "2026-01-01T00:00:00+00:00"},
                          run={"mode": "quick"})
    again = json.loads(json.dumps(report))
    assert again["schema"] == 1
    assert again["machine"]["cores"] == 2
    assert again["run"]["mode"] == "quick"
    assert [f["key"] for f in again["figures"]] == [f.key for f in figs]
    assert again["figures"][1]["pass"] is False
    assert again["figures"][1]["target"] == {"op": "<=", "value": 40}
    assert again["summary"]["fail"] == 1


# --------------------------------------------------------------------------- wrk


WRK_STDOUT = """Running 5s test @ http://127.0.0.1:8080/api/v1/accounts/demo/lambdas/x/invoke
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   102.93ms   60.12ms 410.50ms   70.00%
  1416 requests in 5.01s, 400.00KB read
Requests/sec:    282.63
Transfer/sec:     79.84KB
BENCH_JSON {"requests":1416,"duration_us":5010000,"bytes":409600,"connect_errors":0,"read_errors":0,\
"write_errors":0,"status_errors":16,"timeouts":0,"lat_mean_us":102930.5,"lat_p50_us":98000,\
"lat_p95_us":210000,"lat_p99_us":410500,"lat_max_us":410500}
"""


def test_wrk_parse_output() -> None:
    res = wrk.parse_output(WRK_STDOUT, connections=32)
    assert res.requests == 1416 and res.status_errors == 16 and res.ok_requests == 1400
    assert res.duration_s == pytest.approx(5.01)
    assert res.ok_per_s == pytest.approx(1400 / 5.01)
    assert res.lat_p50_ms == 98.0 and res.lat_p99_ms == 410.5 and res.lat_mean_ms == pytest.approx(102.9305)
    assert res.errors == 16
    d = res.to_dict()
    assert d["connections"] == 32 and d["ok_per_s"] == 279.4 and d["latency_ms"]["p95"] == 210.0


def test_wrk_parse_output_errors() -> None:
    with pytest.raises(wrk.WrkOutputError):
        wrk.parse_output("Running 5s test\n", connections=1)
    with pytest.raises(wrk.WrkOutputError):
        wrk.parse_output('BENCH_JSON {"requests": 1}\n', connections=1)
    with pytest.raises(wrk.WrkOutputError):
        wrk.parse_output("BENCH_JSON {not json\n", connections=1)


def test_wrk_lua_script_keeps_the_key_out() -> None:
    script = wrk.lua_script('{"headers":[],"payload":{"a":"b"}}')
    assert f'os.getenv("{wrk.AUTH_ENV}")' in script
    assert '[==[{"headers":[],"payload":{"a":"b"}}]==]' in script
    assert "BENCH_JSON " in script and "latency:percentile(99)" in script
    assert "%(" not in script and "%%" not in script
    with pytest.raises(ValueError):
        wrk.lua_script("]==]")


# --------------------------------------------------------------------------- metrics


GATEWAY_METRICS = """# HELP fnbus_http_request_seconds Request latency
# TYPE fnbus_http_request_seconds histogram
fnbus_http_request_seconds_bucket{le="0.01",service="gateway"} 55.0
fnbus_http_request_seconds_count{service="gateway"} 100.0
fnbus_http_request_seconds_sum{service="gateway"} 2.0
"""

INVOKER_METRICS = """fnbus_invocation_duration_seconds_count{cold="true"} 2.0
fnbus_invocation_duration_seconds_sum{cold="true"} 1.5
fnbus_invocation_duration_seconds_count{cold="false"} 90.0
fnbus_invocation_duration_seconds_sum{cold="false"} 0.9
"""


def test_parse_prometheus_and_sum() -> None:
    samples = metrics.parse_prometheus(GATEWAY_METRICS + INVOKER_METRICS + "garbage line\n")
    assert metrics.metric_sum(samples, "fnbus_http_request_seconds_count") == 100.0
    assert metrics.metric_sum(samples, "fnbus_invocation_duration_seconds_sum", cold="false") == 0.9
    assert metrics.metric_sum(samples, "fnbus_invocation_duration_seconds_count") == 92.0
    assert metrics.metric_sum(samples, "missing") == 0.0


def test_metrics_window() -> None:
    before = metrics.snapshot_from(GATEWAY_METRICS, INVOKER_METRICS)
    after = metrics.snapshot_from(
        GATEWAY_METRICS.replace("} 100.0", "} 200.0").replace("} 2.0", "} 4.5"),
        INVOKER_METRICS.replace("} 90.0", "} 190.0").replace("} 0.9", "} 1.9"))
    w = metrics.window(before, after)
    assert w["gateway_requests"] == 100 and w["gateway_mean_ms"] == 25.0
    assert w["invoker_warm_invocations"] == 100 and w["invoker_warm_mean_ms"] == 10.0
    assert w["invoker_cold_invocations"] == 0
    assert metrics.window(before, metrics.snapshot_from(None, INVOKER_METRICS)) == {}


def test_gateway_replicas_are_summed() -> None:
    one = metrics.snapshot_from(GATEWAY_METRICS, INVOKER_METRICS)
    two = metrics.snapshot_from([GATEWAY_METRICS, GATEWAY_METRICS], INVOKER_METRICS)
    assert two.gateway_requests == 2 * one.gateway_requests
    assert two.gateway_seconds == 2 * one.gateway_seconds
    assert two.invoker_warm_count == one.invoker_warm_count
    assert not metrics.snapshot_from([GATEWAY_METRICS, None], INVOKER_METRICS).ok


# --------------------------------------------------------------------------- CPU split


def test_parse_stat_line_with_spaces_and_parentheses_in_the_name() -> None:
    line = "4242 (my (odd) proc) S 17 4242 4242 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 1 0 123 0 0"
    proc = cpu.parse_stat_line(line)
    assert proc == cpu.Proc(pid=4242, ppid=17, comm="my (odd) proc", ticks=300)
    assert cpu.parse_stat_line("garbage") is None


def test_parse_proc_stat() -> None:
    text = "cpu  100 5 50 800 20 1 2 3 0 0\ncpu0 50 2 25 400 10 0 1 1 0 0\n"
    busy, total, irq = cpu.parse_proc_stat(text)
    assert total == 981 and busy == 981 - 820 and irq == 3
    with pytest.raises(ValueError):
        cpu.parse_proc_stat("intr 1 2 3\n")


def _snap(ticks: dict[int, int], busy: int, total: int, wall: float, irq: int = 0) -> cpu.CpuSnapshot:
    tree = {1: (0, "init"), 2: (0, "kthreadd"), 3: (2, "kworker/u8:3-flush"), 10: (1, "python"),
            11: (10, "python"), 20: (1, "containerd-shim"), 21: (20, "node"), 30: (99, "wrk"), 99: (1, "python"),
            50: (1, "pytest")}
    procs = {pid: cpu.Proc(pid, ppid, comm, ticks[pid]) for pid, (ppid, comm) in tree.items() if pid in ticks}
    return cpu.CpuSnapshot(procs, busy, total, wall, irq)


def test_cpu_usage_splits_by_component() -> None:
    hz = cpu.CLK_TCK
    before = _snap({1: 0, 2: 0, 3: 0, 10: 0, 11: 0, 20: 0, 21: 0, 30: 0, 99: 0}, busy=0, total=0, wall=100.0)
    # over 2 s: gateway tree 1.5 core-s, container 0.5, wrk 0.2 (a child of the harness, 99), harness 0.1,
    # a process that started meanwhile 0.2, interrupts 0.1, a kernel writeback thread 0.04
    after = _snap({1: 0, 2: 0, 3: int(0.04 * hz), 10: int(1.0 * hz), 11: int(0.5 * hz), 20: 0, 21: int(0.5 * hz),
                   30: int(0.2 * hz), 99: int(0.1 * hz), 50: int(0.2 * hz)},
                  busy=int(3.0 * hz), total=int(4.0 * hz), wall=102.0, irq=int(0.1 * hz))
    shares, others = cpu.split(before, after, {"gateway": 10, "bench harness": 99})
    assert shares["gateway"] == pytest.approx(75.0)
    assert shares["lambda containers"] == pytest.approx(25.0)
    assert shares["wrk"] == pytest.approx(10.0)
    assert shares["bench harness"] == pytest.approx(5.0)
    assert shares["irq/softirq"] == pytest.approx(5.0)
    assert shares["kernel threads"] == pytest.approx(2.0)
    assert shares["other"] == pytest.approx(150.0 - 122.0)
    assert shares["idle"] == pytest.approx(50.0)
    assert others == [("pytest", 10.0)]
    assert cpu.usage(before, after, {"gateway": 10, "bench harness": 99}) == shares
    assert cpu.usage(after, after, {}) == {}
    assert cpu.describe(shares, top=2) == "gateway 75%, other 28%, idle 50%"
    assert cpu.describe({**shares, "other_processes": ["pytest 10%"], "other_processes_percent": 99.0},
                        top=1) == "gateway 75%, idle 50%"


def test_replicas_of_a_service_count_under_its_name(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "gateway.pid").write_text("10\n")
    (run / "gateway-2.pid").write_text("99\n")
    (run / "invoker.pid").write_text("not a pid\n")
    assert cpu.read_roots(run, ["gateway", "invoker", "kafka"]) == {"gateway": (10, 99)}
    assert cpu.read_roots(run, ["gateway", "gateway-2"], replicas=False) == {
        "gateway": (10,), "gateway-2": (99,)}
    hz = cpu.CLK_TCK
    before = _snap({10: 0, 11: 0, 99: 0}, busy=0, total=0, wall=0.0)
    after = _snap({10: int(0.5 * hz), 11: int(0.5 * hz), 99: int(0.6 * hz)}, busy=int(1.6 * hz),
                  total=int(2 * hz), wall=2.0)
    shares = cpu.usage(before, after, cpu.read_roots(run, ["gateway"]))
    assert shares["gateway"] == pytest.approx(80.0)  # both trees: (0.5 + 0.5 + 0.6) core-s over 2 s
