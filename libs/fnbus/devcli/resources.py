"""``fnbus get …``, ``fnbus create …`` and ``fnbus add domain`` (gh-style noun-verb)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from fnbus.devcli import context
from fnbus.devcli.functions import parse_payload
from fnbus.devcli.output import console, print_json, table

get_app = typer.Typer(help="list functions, deployments, the account, events, schedules",
                      no_args_is_help=True)
create_app = typer.Typer(help="create a function or a schedule", no_args_is_help=True)
add_app = typer.Typer(help="add a domain to the allowlist", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]


@get_app.command("functions")
def get_functions(
    state: Annotated[str | None, typer.Option(help="Draft, Productive or Modified")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The account's functions."""
    with context.open_api() as api:
        items = api.lambdas(state)
    if as_json:
        print_json(items)
        return
    table(items, [("name", "name"), ("runtime", "runtime"), ("state", "state"),
                  ("version", "version"), ("deployed_version", "deployed"),
                  ("deployment_state", "deployment"), ("event_id", "event")])


@get_app.command("deployments")
def get_deployments(
    name: Annotated[str | None, typer.Argument(help="a function's history (default: all deployed)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Deployed functions, or one function's deployment history."""
    with context.open_api() as api:
        if name is not None:
            fn = api.lambda_by_name(name)
            assert fn is not None
            history = api.deployments(fn["id"])
            if as_json:
                print_json(history)
                return
            table(history, [("version", "version"), ("action", "action"), ("state", "state"),
                            ("cause", "cause"), ("created_ms", "created (UTC)")], title=name)
            return
        items = [f for f in api.lambdas() if f.get("deployed_version") is not None]
    if as_json:
        print_json(items)
        return
    table(items, [("name", "name"), ("deployed_version", "version"), ("state", "state"),
                  ("deployment_state", "deployment"), ("deployment_cause", "cause")])


@get_app.command("account")
def get_account(as_json: JsonOpt = False) -> None:
    """The account and its provisioning."""
    with context.open_api() as api:
        account = api.account()
    if as_json:
        print_json(account)
        return
    table([{"field": k, "value": v} for k, v in account.items()],
          [("field", "field"), ("value", "value")])


@get_app.command("events")
def get_events(as_json: JsonOpt = False) -> None:
    """The event catalogue with its function limits."""
    with context.open_api() as api:
        events = api.events()
    if as_json:
        print_json(events)
        return
    table(events, [("id", "id"), ("name", "name"), ("limit", "limit"), ("used", "used")])


@get_app.command("schedules")
def get_schedules(as_json: JsonOpt = False) -> None:
    """Schedules with their last and next invocation."""
    with context.open_api() as api:
        items = api.schedules()
    if as_json:
        print_json(items)
        return
    table(items, [("id", "id"), ("lambda_name", "function"), ("cron", "cron (UTC)"),
                  ("enabled", "enabled"), ("next_invocation_ms", "next (UTC)"),
                  ("last_invocation_ms", "last (UTC)"), ("last_state", "last state")])


@create_app.command("function")
def create_function(
    name: Annotated[str, typer.Argument()],
    runtime: Annotated[str, typer.Option(help="nodejs or python")] = "nodejs",
    event: Annotated[str | None, typer.Option(help="event id (`fnbus get events`)")] = None,
    template: Annotated[str | None, typer.Option(
        help="template id (default: Hello World of the runtime)")] = None,
    description: Annotated[str, typer.Option()] = "",
    as_json: JsonOpt = False,
) -> None:
    """Create a Draft function on the platform from a template (`fnbus pull` fetches it)."""
    if template is None:
        template = "hello-world" if runtime == "nodejs" else "hello-world-python"
    body: dict[str, Any] = {"name": name, "runtime": runtime, "description": description,
                            "event_id": event, "template_id": template}
    with context.open_api() as api:
        created = api.create_lambda({k: v for k, v in body.items() if v is not None})
    if as_json:
        print_json(created)
    else:
        console.print(f"{name}: created ({created['state']}, id {created['id']})")


@create_app.command("schedule")
def create_schedule(
    name: Annotated[str, typer.Argument(help="a deployed function")],
    cron: Annotated[str, typer.Option(help='five fields, UTC, e.g. "*/5 * * * *"')],
    payload: Annotated[str | None, typer.Option(help="JSON, or @file with JSON")] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="create it paused")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Invoke a deployed function on a cron schedule."""
    with context.open_api() as api:
        fn = api.lambda_by_name(name)
        assert fn is not None
        created = api.create_schedule({"lambda_id": fn["id"], "cron": cron,
                                       "payload": parse_payload(payload), "enabled": not disabled})
    if as_json:
        print_json(created)
    else:
        console.print(f"schedule {created['id']}: {name} at {cron!r} (UTC)")


@add_app.command("domain")
def add_domain(
    domain: Annotated[str, typer.Argument(help="host name; one leading '*.' allowed")],
    as_json: JsonOpt = False,
) -> None:
    """Allow functions to call this host."""
    with context.open_api() as api:
        added = api.add_domain(domain)
    if as_json:
        print_json(added)
    else:
        console.print(f"{added['domain']}: on the allowlist")
