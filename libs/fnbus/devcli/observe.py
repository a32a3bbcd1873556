"""``fnbus logs`` (search and live tail) and ``fnbus metrics``."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from fnbus.devcli import context
from fnbus.devcli.errors import CliError
from fnbus.devcli.output import console, print_json, table, when

LEVELS = ("debug", "info", "warn", "error")


def _levels(levels: str | None) -> str | None:
    if levels is None:
        return None
    chosen = [lv.strip().lower() for lv in levels.split(",") if lv.strip()]
    wrong = [lv for lv in chosen if lv not in LEVELS]
    if wrong:
        raise CliError(f"--levels: {', '.join(wrong)} not one of {', '.join(LEVELS)}")
    return ",".join(chosen)


def _line(item: dict[str, Any]) -> str:
    return (f"{when(item.get('ts_ms'))}  {str(item.get('level', '')).upper():5}  "
            f"{item.get('activation_id', '')}  {item.get('message', '')}")


def logs(
    name: Annotated[str, typer.Argument(help="function name")],
    start: Annotated[str | None, typer.Option(help="from (ISO 8601 or epoch ms)")] = None,
    end: Annotated[str | None, typer.Option(help="until (ISO 8601 or epoch ms)")] = None,
    levels: Annotated[str | None, typer.Option(help="comma-separated: debug,info,warn,error")] = None,
    query: Annotated[str | None, typer.Option("--query", "-q", help="text in the message")] = None,
    limit: Annotated[int, typer.Option(help="lines per page (newest first)")] = 100,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="then keep printing new lines")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON (one object per line with --follow)")] = False,
) -> None:
    """Search a function's log lines; --follow tails them live (Ctrl-C stops)."""
    with context.open_api() as api:
        fn = api.lambda_by_name(name)
        assert fn is not None
        params: dict[str, Any] = {"lambda_id": fn["id"], "limit": limit}
        for key, value in (("since", start), ("until", end), ("levels", _levels(levels)),
                           ("q", query)):
            if value is not None:
                params[key] = value
        page = api.logs(params)
        items = list(reversed(page.get("items") or []))  # oldest first, like a terminal
        if as_json and not follow:
            print_json(page)
        elif as_json:
            for item in items:
                sys.stdout.write(json.dumps(item) + "\n")
            sys.stdout.flush()
        else:
            for item in items:
                console.print(_line(item), markup=False, highlight=False)
        if not follow:
            return
        tail = {k: v for k, v in params.items() if k in ("lambda_id", "levels", "q")}
        try:
            for item in api.tail(tail):
                if as_json:
                    sys.stdout.write(json.dumps(item) + "\n")
                    sys.stdout.flush()
                else:
                    console.print(_line(item), markup=False, highlight=False)
                    console.file.flush()
        except KeyboardInterrupt:
            return


def metrics(
    name: Annotated[str | None, typer.Argument(help="function name (default: the account)")] = None,
    last: Annotated[str, typer.Option(help="1h, 24h or 7d")] = "24h",
    output: Annotated[str, typer.Option("--output", "-o", help="table, json or csv")] = "table",
    as_json: Annotated[bool, typer.Option("--json", help="same as --output json")] = False,
) -> None:
    """Invocations by state and latency per bucket over the last hour, day or week."""
    if last not in ("1h", "24h", "7d"):
        raise CliError("--last must be 1h, 24h or 7d")
    output = "json" if as_json else output
    if output not in ("table", "json", "csv"):
        raise CliError("--output must be table, json or csv")
    with context.open_api() as api:
        lambda_id = None
        if name is not None:
            fn = api.lambda_by_name(name)
            assert fn is not None
            lambda_id = fn["id"]
        if output == "csv":
            sys.stdout.write(api.metrics(last, csv=True, lambda_id=lambda_id))
            return
        data = api.metrics(last, lambda_id=lambda_id)
    if output == "json":
        print_json(data)
        return
    rows = []
    for item in data.get("items") or []:
        inv = item.get("invocations") or {}
        dur = item.get("duration_ms") or {}
        rows.append({"bucket_start_ms": item.get("bucket_start_ms"), "total": item.get("total"),
                     "ok": inv.get("SUCCEEDED"),
                     "failed": sum(v for k, v in inv.items() if k != "SUCCEEDED"),
                     "p50": dur.get("p50"), "p95": dur.get("p95"),
                     "cold": item.get("cold_starts")})
    table(rows, [("bucket_start_ms", "bucket (UTC)"), ("total", "invocations"), ("ok", "ok"),
                 ("failed", "failed"), ("p50", "p50 ms"), ("p95", "p95 ms"),
                 ("cold", "cold starts")], title=f"last {last}")
