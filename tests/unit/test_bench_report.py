"""bench/report.py: the README's tables come from a result file, with the floors and targets beside."""

from __future__ import annotations

import pytest

from bench.report import headline_table, hops_table, kafka_tables, render, replace_between, scale_table
from bench.stats import Figure, at_least, at_most, build_report, spread_figure


def report() -> dict:
    figures = [
        spread_figure("warm_c1_p50", "w", "concurrency 1, p50", [4.0, 6.5, 5.5], "ms", "wrk", at_most(5.0)),
        spread_figure("throughput", "t", "sync", [900.0, 1100.0, 1050.0], "req/s", "wrk", at_least(1000.0)),
        spread_figure("floor_runner_run_p50", "f", "warm runner run() over its socket p50", [0.2, 0.25, 0.22],
                      "ms", "RunnerConnection"),
        Figure("hop_total", "h", "gateway total p50", 3.2, "ms", "Server-Timing", details={"p99": 9.1, "n": 10}),
        Figure("hop_runner", "h", "runner round trip p50", 0.4, "ms", "Server-Timing", details={"p99": 1.0}),
        Figure("cold_prewarmed", "c", "cold", None, "ms", "httpx", at_most(20.0), "failed"),
    ]
    machine = {"cores": 2, "loadavg_at_start": [0.8, 1, 1], "loadavg_at_end": [2.5, 1, 1],
               "cpu_split_percent": {"user": 60.0, "system": 25.0, "idle": 15.0, "steal": 0.0},
               "process_cpu_percent_of_one_core": {"gateway": 55.0, "invoker": 40.0, "kafka": 20.0,
                                                   "other_processes": ["x 1%"]}}
    run = {"mode": "full", "started": "2026-12-04T19:00:00+00:00", "commit": "abc1234", "dirty": False}
    return build_report(figures, machine=machine, run=run)


def test_headline_rows_carry_median_range_target_verdict_and_floor() -> None:
    table = headline_table(report())
    row = next(line for line in table.splitlines() if line.startswith("| warm sync invoke, concurrency 1, p50"))
    assert "| 5.50 ms (4.00–6.50, 3 runs) |" in row
    assert "≤ 5.00 ms" in row
    assert "**missed**" in row
    assert "warm runner run() over its socket p50: 0.22 ms (0.20–0.25, 3 runs)" in row
    row = next(line for line in table.splitlines() if line.startswith("| throughput"))
    assert "1050 req/s (900–1100, 3 runs)" in row
    assert "| met |" in row
    # A failed measurement says so; a figure the file does not have is left out.
    assert "| cold start, pre-warmed container | error | ≤ 20.0 ms | error |" in table
    assert "async accepted" not in table


def test_hops_table_in_path_order() -> None:
    table = hops_table(report())
    assert table is not None
    lines = table.splitlines()
    assert lines[2] == "| gateway total | 3.20 ms | 9.10 ms |  |"
    assert lines[3] == "| runner round trip | 0.40 ms | 1.00 ms | warm runner 0.22 ms |"


def test_hop_floors_from_the_kafka_and_runner_floors() -> None:
    from bench.report import hop_floors

    kafka = {"value": 1.5, "details": {"produce_ack_ms": {"p50": 1.0}}}
    floors = hop_floors({"floor_kafka_rt_p50": kafka, "floor_runner_run_p50": {"value": 0.2}})
    assert floors == {"produce": "Kafka produce → ack 1.00 ms", "queue": "Kafka ack → consumed 0.50 ms",
                      "reply": "one Kafka hop 1.50 ms", "runner": "warm runner 0.20 ms"}


def test_render_names_the_file_commit_load_and_cpu() -> None:
    text = render(report(), "bench/results/2026-12-04T1900Z-abc1234.json")
    first = text.splitlines()[0]
    assert first.startswith("From `bench/results/2026-12-04T1900Z-abc1234.json`: commit `abc1234`")
    assert "load average 0.8 at the start, 2.5 at the end" in first
    assert "user 60.0 %, system 25.0 %, idle 15.0 %" in first
    assert "gateway 55, invoker 40, kafka 20" in first
    assert "Scale-out" not in text


def test_scale_results_are_rendered_in_either_shape() -> None:
    as_figures = {"figures": [{"key": "tp_1", "label": "1 invoker", "value": 400.0, "unit": "req/s", "status": "-",
                               "details": {"spread": {"n": 3, "median": 400.0, "min": 380.0, "max": 410.0}}}]}
    assert "| 1 invoker | 400 req/s (380–410, 3 runs) |" in (scale_table(as_figures) or "")
    rows = {"invokers": [{"invokers": 1, "per_s": 400.0}, {"invokers": 2, "per_s": 610.0}], "note": "x"}
    table = scale_table(rows) or ""
    assert "| invokers | per_s |" in table
    assert "| 2 | 610.0 |" in table
    assert scale_table(None) is None
    own = {"throughput": {"1x1": {"ok_per_s": {"median": 400.0, "min": 380.0, "max": 410.0},
                                  "p50_ms_of_median_run": 30.5, "cpu_of_median_run": "gateway 90%"}},
           "cold_starts": {"3_invokers": {"cold_rate": 0.02, "cold": 2, "ok": 100}}}
    table = scale_table(own) or ""
    assert "| 1 × 1 | 400/s (380–410) | 30.5 ms | gateway 90% |" in table
    assert "| 3 | 0.02 (2 of 100) |" in table
    rep = report() | {"scale": rows}
    assert "Scale-out (bench/scale.py)" in render(rep, "f.json")


def test_replace_between_markers_keeps_the_rest() -> None:
    text = "intro\n<!-- bench:begin -->\nold\ntable\n<!-- bench:end -->\nafter\n"
    out = replace_between(text, ("<!-- bench:begin -->", "<!-- bench:end -->"), "new table\n")
    assert out == "intro\n<!-- bench:begin -->\nnew table\n<!-- bench:end -->\nafter\n"
    with pytest.raises(ValueError):
        replace_between("no markers", ("<!-- a -->", "<!-- b -->"), "x")
    quoted = "see `<!-- bench:begin -->` and `<!-- bench:end -->`\n" + text
    out = replace_between(quoted, ("<!-- bench:begin -->", "<!-- bench:end -->"), "new")
    assert out.startswith("see `<!-- bench:begin -->` and `<!-- bench:end -->`\nintro\n<!-- bench:begin -->\nnew\n")


def test_kafka_tables_from_the_tuning_details() -> None:
    doc = {"sync_latency": [{"linger_ms": 0, "background_per_s": 0, "n": 3, "round_trip_p50_ms": 1.5,
                             "round_trip_p99_ms": 2.5, "ack_p50_ms": 1.2}],
           "async_throughput": [{"linger_ms": 5, "max_batch_size": 16384, "concurrency": 0, "records": 10,
                                 "seconds": 1.0, "per_s": 3000.0, "cpu_us_per_record": 58.0, "ack_ms_p50": 6.6,
                                 "mode": "open 3000/s", "broker_cpu_us_per_record": 27.5}],
           "fetch_latency": [{"fetch_max_wait_ms": 200, "n": 3, "consume_p50_ms": 0.3, "consume_p99_ms": 0.7}],
           "fetch_throughput": [{"max_poll_records": 200, "fetch_max_wait_ms": 200, "records": 100,
                                 "per_s": 600000.0, "polls": 1, "cpu_us_per_record": 1.5}]}
    rep = report()
    rep["figures"][0]["details"]["kafka_tuning"] = doc
    text = kafka_tables(rep) or ""
    assert "| 0 | 0/s | 1.50 ms | 2.50 ms | 1.20 ms |" in text
    assert "| send_nowait, 3000/s | 5 | 16 KiB | 3000 | 6.6 ms | 58 µs | 28 µs |" in text
    assert "| 200 | 0.30 ms | 0.70 ms |" in text
    assert kafka_tables(report()) is None
    assert kafka_tables(doc) == text  # a bench.kafka_bench --json file as it is


def test_cpu_per_call_table_and_the_ceiling_beside_throughput() -> None:
    from bench.report import cpu_table

    rep = report()
    rep["figures"].append(spread_figure(
        "throughput_ceiling", "f", "CPU ceiling", [600.0, 650.0, 700.0], "req/s", "/proc", None, "",
        {"cpu_ms_per_call": {"gateway": 1.2, "kafka": 0.8, "wrk": 0.4, "registry": 0.001, "total": 2.401}},
    ).to_dict())
    row = next(line for line in headline_table(rep).splitlines() if line.startswith("| throughput"))
    assert row.endswith("| CPU ceiling: 650 req/s (600–700, 3 runs) |")
    table = cpu_table(rep)
    assert table is not None
    assert table.splitlines()[2:] == ["| gateway | 1.20 |", "| kafka | 0.80 |", "| wrk | 0.40 |",
                                      "| **all** (the ceiling leaves wrk out: 650 req/s (600–700, 3 runs)) | 2.40 |"]
    assert table in render(rep, "x.json")
    assert cpu_table(report()) is None
