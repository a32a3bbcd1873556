"""Markdown tables from one result file of ``bench/run.py``, so that no figure is typed by hand.

```sh
.venv/bin/python bench/report.py bench/results/2026-12-04T1912Z-4edfc45.json            # print
.venv/bin/python bench/report.py bench/results/2026-12-04T1912Z-4edfc45.json --update-readme
```

``--update-readme`` replaces what stands between ``<!-- bench:begin -->`` and
``<!-- bench:end -->`` in README.md (the headline table, with the floors and
the issue's targets beside the figures) and between ``<!-- kafka-tuning:begin -->``
and ``<!-- kafka-tuning:end -->`` in bench/README.md (the sweeps behind the
Kafka settings). Everything else in those files is left alone.

A ``bench/scale.py`` result included with ``bench/run.py --scale FILE`` (or
given here with ``--scale FILE``) is rendered as a table of its own.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.stats import format_number  # noqa: E402

README_MARKERS = ("<!-- bench:begin -->", "<!-- bench:end -->")
KAFKA_MARKERS = ("<!-- kafka-tuning:begin -->", "<!-- kafka-tuning:end -->")

# (figure key, label, key of the floor figure shown beside it)
HEADLINE: tuple[tuple[str, str, str | None], ...] = (
    ("warm_c1_p50", "warm sync invoke, concurrency 1, p50 (wrk)", "floor_runner_run_p50"),
    ("warm_c1_p99", "warm sync invoke, concurrency 1, p99 (wrk)", "floor_runner_run_p99"),
    ("overhead_over_runner", "platform overhead over the warm-runner floor, p50", "floor_path_sum"),
    ("floor_gateway_front_p50", "gateway front (HTTP + API key, no Kafka), p50", None),
    ("throughput", "throughput, sync, small payload", "throughput_ceiling"),
    ("async_accepted", "async accepted (202s per second)", "floor_accept"),
    ("async_completed", "async completed end to end (accepted → activation record)", None),
    ("cold_prewarmed", "cold start, pre-warmed container", "floor_cold_direct"),
    ("warm_c16_p50", "warm sync invoke, concurrency 16, p50 (wrk)", None),
    ("deploy_redeploy", "deploy, new version → Productive", None),
)
FLOORS = (("floor_runner_run_p50", "warm runner over its socket, p50"),
          ("floor_kafka_rt_p50", "Kafka produce → consume, one hop, p50"),
          ("floor_path_sum", "sum of floors on the warm path (2 Kafka hops + runner)"),
          ("floor_accept", "bare ASGI accept → Kafka ack (no platform), accepted/s"),
          ("floor_docker_run", "`docker run` of the runtime image"))
HOP_ORDER = ("total", "produce", "queue", "dispatch", "runner", "reply", "client")


def _figures(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["key"]: f for f in report.get("figures", [])}


def _value(fig: dict[str, Any] | None) -> str:
    """``median (min–max)`` when the figure has several runs, else the value; ``—`` when it failed."""
    if fig is None:
        return "not measured"
    unit = fig["unit"]
    if fig["value"] is None:
        return "error"
    text = format_number(fig["value"], unit)
    sp = (fig.get("details") or {}).get("spread")
    if sp and sp.get("n", 1) > 1:
        lo, hi = (format_number(sp[k], unit).split(" ")[0] for k in ("min", "max"))
        text += f" ({lo}–{hi}, {sp['n']} runs)"
    return text


def _target(fig: dict[str, Any] | None) -> str:
    if fig is None or not fig.get("target"):
        return "–"
    t = fig["target"]
    return f"{'≤' if t['op'] == '<=' else '≥'} {format_number(t['value'], fig['unit'])}"


def _result(fig: dict[str, Any] | None) -> str:
    if fig is None:
        return "–"
    return {"pass": "met", "fail": "**missed**", "error": "error"}.get(fig["status"], "–")


def headline_table(report: dict[str, Any]) -> str:
    figs = _figures(report)
    lines = ["| figure | measured: median (min–max) | target | | floor beside it |", "|---|---|---|---|---|"]
    for key, label, floor_key in HEADLINE:
        fig = figs.get(key)
        if fig is None:
            continue
        floor = figs.get(floor_key) if floor_key else None
        floor_text = f"{floor['label']}: {_value(floor)}" if floor is not None else ""
        lines.append(f"| {label} | {_value(fig)} | {_target(fig)} | {_result(fig)} | {floor_text} |")
    return "\n".join(lines)


def hops_table(report: dict[str, Any]) -> str | None:
    figs = _figures(report)
    rows = [figs[f"hop_{h}"] for h in HOP_ORDER if f"hop_{h}" in figs and figs[f"hop_{h}"]["value"] is not None]
    if not rows:
        return None
    floors = hop_floors(figs)
    lines = ["| hop (Server-Timing, sync, concurrency 1) | p50 | p99 | floor beside it (p50) |", "|---|---|---|---|"]
    for fig in rows:
        p99 = (fig.get("details") or {}).get("p99")
        hop = fig["key"].removeprefix("hop_")
        lines.append(f"| {fig['label'].removesuffix(' p50')} | {_value(fig)} | "
                     f"{format_number(p99, 'ms') if p99 is not None else '–'} | {floors.get(hop, '')} |")
    return "\n".join(lines)


def hop_floors(figs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """What each hop would cost at the floor: the Kafka hop's ack and delivery, the runner's round trip."""
    out: dict[str, str] = {}
    kafka = figs.get("floor_kafka_rt_p50")
    if kafka is not None and kafka["value"] is not None:
        ack = (((kafka.get("details") or {}).get("produce_ack_ms")) or {}).get("p50")
        if ack is not None:
            out["produce"] = f"Kafka produce → ack {format_number(ack, 'ms')}"
            out["queue"] = f"Kafka ack → consumed {format_number(kafka['value'] - ack, 'ms')}"
        out["reply"] = f"one Kafka hop {format_number(kafka['value'], 'ms')}"
    runner = figs.get("floor_runner_run_p50")
    if runner is not None and runner["value"] is not None:
        out["runner"] = f"warm runner {format_number(runner['value'], 'ms')}"
    return out


def floors_table(report: dict[str, Any]) -> str | None:
    figs = _figures(report)
    lines = ["| floor | measured: median (min–max) |", "|---|---|"]
    for key, label in FLOORS:
        if key in figs:
            lines.append(f"| {label} | {_value(figs[key])} |")
    return "\n".join(lines) if len(lines) > 2 else None


def cpu_table(report: dict[str, Any]) -> str | None:
    """Core-ms per sync call at saturation, by component (the throughput ceiling's basis)."""
    fig = _figures(report).get("throughput_ceiling")
    per_call = ((fig or {}).get("details") or {}).get("cpu_ms_per_call")
    if not per_call:
        return None
    rows = sorted(((k, v) for k, v in per_call.items() if k != "total" and v >= 0.01), key=lambda kv: -kv[1])
    lines = ["| CPU per sync call at saturation (median run) | core-ms |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in rows]
    lines.append(f"| **all** (the ceiling leaves wrk out: {_value(fig)}) | {per_call['total']:.2f} |")
    return "\n".join(lines)


def _generic_rows(rows: Sequence[dict[str, Any]]) -> str:
    keys: list[str] = []
    for row in rows:
        keys += [k for k, v in row.items() if k not in keys and not isinstance(v, dict | list)]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(k, "")) for k in keys) + " |")
    return "\n".join(lines)


def scale_table(scale: dict[str, Any] | None) -> str | None:
    """bench/scale.py's result: its figures if it has the harness's shape, else each list of rows as a table."""
    if not scale:
        return None
    if isinstance(scale.get("figures"), list):
        lines = ["| figure | measured | target | |", "|---|---|---|---|"]
        for fig in scale["figures"]:
            lines.append(f"| {fig.get('label', fig.get('key'))} | {_value(fig)} | {_target(fig)} | {_result(fig)} |")
        return "\n".join(lines)
    if isinstance(scale.get("throughput"), dict) and scale["throughput"]:
        return _scale_layouts(scale)
    parts = [f"{name}:\n\n{_generic_rows(rows)}" for name, rows in scale.items()
             if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows)]
    return "\n\n".join(parts) or None


def _scale_layouts(scale: dict[str, Any]) -> str:
    """bench/scale.py's own shape: ``throughput`` per ``<invokers>x<gateways>`` layout, ``cold_starts``."""
    lines = ["| invokers × gateways | sync throughput: median (min–max) | p50 of the median run "
             "| CPU of the median run |", "|---|---|---|---|"]
    for key, result in scale["throughput"].items():
        invokers, _, gateways = key.partition("x")
        rate = result.get("ok_per_s") or {}
        have = {"median", "min", "max"} <= rate.keys()
        text = f"{rate['median']:.0f}/s ({rate['min']:.0f}–{rate['max']:.0f})" if have else "–"
        p50 = result.get("p50_ms_of_median_run")
        lines.append(f"| {invokers} × {gateways} | {text} | {'' if p50 is None else f'{p50} ms'} | "
                     f"{result.get('cpu_of_median_run', '')} |")
    colds = scale.get("cold_starts") or {}
    if colds:
        lines += ["", "| invokers | cold-start rate (mixed workload) |", "|---|---|"]
        for key, result in colds.items():
            lines.append(f"| {key.split('_')[0]} | {result.get('cold_rate')} ({result.get('cold')} of "
                         f"{result.get('ok')}) |")
    return "\n".join(lines)


def machine_line(report: dict[str, Any], source: str) -> str:
    m, run = report.get("machine", {}), report.get("run", {})
    load0 = (m.get("loadavg_at_start") or [None])[0]
    load1 = (m.get("loadavg_at_end") or [None])[0]
    split = m.get("cpu_split_percent") or {}
    commit = run.get("commit") or "?"
    text = (f"From `{source}`: commit `{commit}`{' with uncommitted changes' if run.get('dirty') else ''}, "
            f"{run.get('started', m.get('date', '?'))}, {run.get('mode', '?')} run"
            f"{' on a private stack' if run.get('private_stack') else ''}, {m.get('cores', '?')} cores; "
            f"load average {load0:.1f} at the start, {load1:.1f} at the end" if load0 is not None and load1 is not None
            else f"From `{source}`")
    stack = m.get("settings") or {}
    if "gateways" in stack:
        text += (f"; stack: {stack['gateways']} gateway(s), {stack.get('invokers', 1)} invoker(s), "
                 f"queue workers at nice {stack.get('background_nice', 0)}")
    if split:
        text += f"; CPU over the run: user {split['user']} %, system {split['system']} %, idle {split['idle']} %"
    procs = m.get("process_cpu_percent_of_one_core") or {}
    busiest = sorted(((k, v) for k, v in procs.items() if isinstance(v, int | float) and k != "idle"),
                     key=lambda kv: -kv[1])[:5]
    if busiest:
        text += " (busiest, % of one core: " + ", ".join(f"{k} {v:.0f}" for k, v in busiest) + ")"
    return text + "."


def kafka_tables(report: dict[str, Any]) -> str | None:
    """The sweeps of a bench/run.py result (in a figure's details), or a ``bench.kafka_bench --json`` file."""
    doc = report if "sync_latency" in report else None
    for fig in report.get("figures", []):
        doc = (fig.get("details") or {}).get("kafka_tuning") or doc
    if not doc:
        return None
    out = ["Sync path — sequential produce → consume round trips (one partition; a 2 ms pause between calls):", "",
           "| linger_ms | background records | round trip p50 | p99 | ack p50 |", "|---|---|---|---|---|"]
    for r in doc["sync_latency"]:
        out.append(f"| {r['linger_ms']} | {r['background_per_s']}/s | {r['round_trip_p50_ms']:.2f} ms | "
                   f"{r['round_trip_p99_ms']:.2f} ms | {r['ack_p50_ms']:.2f} ms |")
    out += ["", "Async path — records per second, ack latency and CPU per record (client = this process, "
                "broker = the Kafka JVM):", "",
            "| mode | linger_ms | max_batch_size | records/s | ack p50 | client CPU/record | broker CPU/record |",
            "|---|---|---|---|---|---|---|"]
    for r in doc["async_throughput"]:
        mode = "64 senders, each awaits its ack" if r["mode"] == "closed" else f"send_nowait, {r['mode'][5:]}"
        out.append(f"| {mode} | {r['linger_ms']} | {r['max_batch_size'] // 1024} KiB | {r['per_s']:.0f} | "
                   f"{r['ack_ms_p50']:.1f} ms | {r['cpu_us_per_record']:.0f} µs | "
                   f"{r['broker_cpu_us_per_record']:.0f} µs |")
    out += ["", "Consumer — one record every 20 ms (ack → consumed), and a backlog read:", "",
            "| fetch_max_wait_ms | consumed after ack p50 | p99 |", "|---|---|---|"]
    for r in doc["fetch_latency"]:
        out.append(f"| {r['fetch_max_wait_ms']} | {r['consume_p50_ms']:.2f} ms | {r['consume_p99_ms']:.2f} ms |")
    out += ["", "| max_poll_records | records/s | polls | CPU/record |", "|---|---|---|---|"]
    for r in doc["fetch_throughput"]:
        out.append(f"| {r['max_poll_records']} | {r['per_s']:.0f} | {r['polls']} | {r['cpu_us_per_record']:.1f} µs |")
    return "\n".join(out)


def render(report: dict[str, Any], source: str, scale: dict[str, Any] | None = None) -> str:
    parts = [machine_line(report, source), headline_table(report)]
    hops = hops_table(report)
    if hops:
        parts.append(hops)
    floors = floors_table(report)
    if floors:
        parts.append(floors)
    cpu = cpu_table(report)
    if cpu:
        parts.append(cpu)
    st = scale_table(scale if scale is not None else report.get("scale"))
    if st:
        parts.append("Scale-out (bench/scale.py):\n\n" + st)
    return "\n\n".join(parts)


def replace_between(text: str, markers: tuple[str, str], body: str) -> str:
    """Replace the lines between two marker lines (a marker quoted inside prose is not a marker line)."""
    begin, end = markers
    lines = text.split("\n")
    try:
        i = lines.index(begin)
        j = lines.index(end, i + 1)
    except ValueError:
        raise ValueError(f"marker lines {begin} … {end} not found (in this order)") from None
    return "\n".join([*lines[: i + 1], body.rstrip(), *lines[j:]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/report.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("result", type=Path, help="a bench/run.py result file")
    parser.add_argument("--scale", type=Path, default=None, help="a bench/scale.py result to render too")
    parser.add_argument("--kafka", type=Path, action="append", default=[],
                        help="a `python -m bench.kafka_bench --json` file whose sweeps go into the Kafka block too")
    parser.add_argument("--update-readme", action="store_true",
                        help="replace the marked tables in README.md and bench/README.md")
    args = parser.parse_args(argv)
    report = json.loads(args.result.read_text())
    scale = json.loads(args.scale.read_text()) if args.scale else None
    try:
        source = args.result.resolve().relative_to(REPO).as_posix()
    except ValueError:
        source = args.result.as_posix()
    table = render(report, source, scale)
    blocks = []
    for path, doc in [(source, report), *((p.as_posix(), json.loads(p.read_text())) for p in args.kafka)]:
        table_text = kafka_tables(doc)
        if table_text:
            commit = (doc.get("run") or {}).get("commit")
            blocks.append(f"From `{path}`" + (f" (commit `{commit}`)" if commit else "") + f":\n\n{table_text}")
    kafka = "\n\n".join(blocks) or None
    if not args.update_readme:
        print(table)
        if kafka:
            print("\n" + kafka)
        return 0
    readme = REPO / "README.md"
    readme.write_text(replace_between(readme.read_text(), README_MARKERS, table))
    print(f"updated {readme.relative_to(REPO)}")
    if kafka:
        bench_readme = REPO / "bench" / "README.md"
        bench_readme.write_text(replace_between(bench_readme.read_text(), KAFKA_MARKERS, kafka))
        print(f"updated {bench_readme.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
