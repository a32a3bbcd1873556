"""The harness's Server-Timing parser, per-hop medians, repeated-run spreads, CPU split and result names."""

from __future__ import annotations

import pytest

from bench.stats import (
    REMAINDER,
    at_most,
    chunk_percentiles,
    cpu_split,
    hop_breakdown,
    parse_server_timing,
    proc_stat_ticks,
    result_file_name,
    spread,
    spread_figure,
)

# --------------------------------------------------------------------------- Server-Timing


def test_parses_the_gateway_contract() -> None:
    header = ("total;dur=4.21, produce;dur=0.9, queue;dur=0.35, dispatch;dur=0.12, runner;dur=0.4, "
              "reply;dur=1.1")
    assert parse_server_timing(header) == {"total": 4.21, "produce": 0.9, "queue": 0.35, "dispatch": 0.12,
                                           "runner": 0.4, "reply": 1.1}


def test_descriptions_quotes_spacing_and_case_of_dur() -> None:
    header = 'total;desc="gateway";dur=3 ,  runner ; DUR = "0.25" ;desc=x'
    assert parse_server_timing(header) == {"total": 3.0, "runner": 0.25}


@pytest.mark.parametrize("header", [None, "", " , ,", "total", "total;desc=x", "total;dur=", "total;dur=abc",
                                    "total;dur=nan", ";dur=1"])
def test_metrics_without_a_usable_duration_are_left_out(header: str | None) -> None:
    assert parse_server_timing(header) == {}


def test_the_first_of_repeated_names_wins_and_others_survive_a_bad_one() -> None:
    assert parse_server_timing("total;dur=2, total;dur=9, queue;dur=oops, reply;dur=1") == {"total": 2.0,
                                                                                         "reply": 1.0}


def test_hops_that_are_missing_are_omitted() -> None:
    samples = [(5.0, {"total": 4.0, "runner": 0.5}), (6.0, {"total": 5.0, "runner": 0.7}), (7.0, {})]
    out = hop_breakdown(samples)
    assert list(out["hops"]) == ["total", "runner", REMAINDER]
    assert out["hops"]["runner"] == {"p50": 0.6, "p99": pytest.approx(0.698), "n": 2}
    # The remainder only where the gateway said its total: 5-4 and 6-5.
    assert out["hops"][REMAINDER]["p50"] == 1.0
    assert out["hops"][REMAINDER]["n"] == 2
    assert out["samples"] == 3
    assert out["with_header"] == 2
    assert out["client_p50"] == 6.0
    assert out["sum_of_hops_p50"] == 0.6


def test_all_hops_in_path_order_and_their_sum() -> None:
    timing = {"reply": 1.0, "runner": 0.4, "dispatch": 0.1, "queue": 0.3, "produce": 0.8, "total": 3.0}
    out = hop_breakdown([(3.5, timing)] * 3)
    assert list(out["hops"]) == ["total", "produce", "queue", "dispatch", "runner", "reply", REMAINDER]
    assert out["sum_of_hops_p50"] == pytest.approx(2.6)
    assert out["hops"][REMAINDER]["p50"] == pytest.approx(0.5)


def test_unknown_metric_names_are_kept_after_the_contract_ones() -> None:
    out = hop_breakdown([(2.0, {"total": 1.0, "db": 0.2})])
    assert list(out["hops"]) == ["total", "db", REMAINDER]


def test_no_header_at_all() -> None:
    out = hop_breakdown([(2.0, {}), (3.0, {})])
    assert out["hops"] == {}
    assert out["with_header"] == 0
    assert out["client_p50"] == 2.5


# --------------------------------------------------------------------------- repeated runs


def test_spread_is_median_min_max() -> None:
    sp = spread([9.0, 3.0, 5.0])
    assert (sp.n, sp.median, sp.min, sp.max) == (3, 5.0, 3.0, 9.0)
    assert sp.describe("{:.1f}") == "5.0 (3.0–9.0, 3 runs)"
    with pytest.raises(ValueError):
        spread([])


def test_spread_figure_carries_the_runs_and_the_target() -> None:
    fig = spread_figure("warm_c1_p50", "s", "p50", [6.0, 4.0, 5.0], "ms", "wrk", at_most(5.0), "3 runs of 10 s")
    assert fig.value == 5.0
    assert fig.status == "pass"
    assert fig.details["spread"] == {"n": 3, "median": 5.0, "min": 4.0, "max": 6.0}
    assert fig.details["runs_values"] == [6.0, 4.0, 5.0]
    assert fig.note.startswith("median of 3 runs (min 4.00 ms, max 6.00 ms); 3 runs of 10 s")


def test_spread_figure_without_runs_is_an_error_figure() -> None:
    fig = spread_figure("x", "s", "x", [], "req/s", "wrk", note="failed")
    assert fig.value is None
    assert fig.status == "error"
    assert fig.note == "failed"


def test_chunk_percentiles_split_one_sequence_into_runs() -> None:
    samples = [1.0, 2.0, 3.0, 10.0, 20.0, 30.0, 100.0, 200.0, 300.0, 400.0]
    assert chunk_percentiles(samples, 3, 50) == [2.0, 20.0, 250.0]
    with pytest.raises(ValueError):
        chunk_percentiles([1.0, 2.0], 3, 50)


# --------------------------------------------------------------------------- CPU and names


STAT_BEFORE = "cpu  100 10 50 800 40 5 5 0 0 0\ncpu0 50 5 25 400 20 2 3 0 0 0\nintr 1\n"
STAT_AFTER = "cpu  160 10 80 880 60 10 10 0 0 0\ncpu0 80 5 40 440 30 5 5 0 0 0\nintr 2\n"


def test_proc_stat_ticks_reads_the_aggregate_line() -> None:
    ticks = proc_stat_ticks(STAT_BEFORE)
    assert ticks == {"user": 100, "nice": 10, "system": 50, "idle": 800, "iowait": 40, "irq": 5, "softirq": 5,
                     "steal": 0}
    with pytest.raises(ValueError):
        proc_stat_ticks("cpu0 1 2 3\n")


def test_cpu_split_over_a_window() -> None:
    # Deltas: user 60, system 30, idle 80, iowait 20, irq 5, softirq 5 → total 200.
    split = cpu_split(proc_stat_ticks(STAT_BEFORE), proc_stat_ticks(STAT_AFTER))
    assert split == {"user": 30.0, "system": 20.0, "idle": 50.0, "steal": 0.0}


def test_cpu_split_of_an_empty_window_is_idle() -> None:
    same = proc_stat_ticks(STAT_BEFORE)
    assert cpu_split(same, same)["idle"] == 100.0


def test_result_file_names() -> None:
    assert result_file_name("2026-12-04T1912Z", "4edfc45") == "2026-12-04T1912Z-4edfc45.json"
    assert result_file_name("2026-12-04T1912Z", "4edfc45", dirty=True, mode="quick") == \
        "2026-12-04T1912Z-4edfc45-dirty-quick.json"
    assert result_file_name("d", None) == "d-nocommit.json"


def test_reads_what_the_gateway_writes() -> None:
    """The contract with libs/fnbus/tracing.py: the same names, in path order, read back to 0.01 ms."""
    from bench.stats import HOPS, TIMING_TOTAL
    from fnbus import tracing

    assert (TIMING_TOTAL, *HOPS) == tracing.HOPS
    hops = {"total": 4.216, "produce": 0.904, "queue": 0.351, "dispatch": 0.12, "runner": 0.4, "reply": 1.1}
    parsed = parse_server_timing(tracing.server_timing(hops))
    assert list(parsed) == list(hops)
    assert parsed == pytest.approx(hops, abs=0.006)
