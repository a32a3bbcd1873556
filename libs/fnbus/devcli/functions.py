"""``pull``, ``push``, ``deploy``, ``undeploy`` and ``invoke``: the lpf workflow."""

from __future__ import annotations

import difflib
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from fnbus.devcli import context, project
from fnbus.devcli.client import Api
from fnbus.devcli.errors import CliError, Exit
from fnbus.devcli.output import console, err, print_json

NameArg = Annotated[str | None, typer.Argument(help="function name (default: --all)")]
AllOpt = Annotated[bool, typer.Option("--all", help="every function")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="do not ask before overwriting")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]


def unified_diff(old: str, new: str, old_label: str, new_label: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                        fromfile=old_label, tofile=new_label))


def _settings_text(env: Any, deps: Any, description: Any) -> str:
    """env, dependencies and description as lines, so that they take part in the diff."""
    return json.dumps({"description": description or "", "env": env or {},
                       "dependencies": deps or {}}, indent=2, sort_keys=True) + "\n"


def _remote_text(remote: dict[str, Any]) -> tuple[str, str]:
    return str(remote.get("code") or ""), _settings_text(
        remote.get("env"), remote.get("dependencies"), remote.get("description"))


def _local_text(fn: project.LocalFunction) -> tuple[str, str]:
    c = fn.config
    return fn.code, _settings_text(c.get("env"), c.get("dependencies"), c.get("description"))


def _show_diff(code_a: str, code_b: str, cfg_a: str, cfg_b: str, a: str, b: str) -> bool:
    text = unified_diff(code_a, code_b, a, b) + unified_diff(cfg_a, cfg_b, f"{a} (config)",
                                                              f"{b} (config)")
    if text:
        console.print(text, markup=False, highlight=False, end="")
    return bool(text)


def _names(root: Path, name: str | None, all_: bool, api: Api | None = None) -> list[str]:
    if name is not None and all_:
        raise CliError("give a function name or --all, not both")
    if name is not None:
        return [name]
    if not all_:
        raise CliError("give a function name or --all")
    if api is not None:
        return sorted(item["name"] for item in api.lambdas())
    return project.local_names(root)


def pull(name: NameArg = None, all_: AllOpt = False, yes: YesOpt = False) -> None:
    """Write remote functions into functions/<name>/, showing the diff before overwriting."""
    root = project.find_root()
    with context.open_api() as api:
        for fn_name in _names(root, name, all_, api):
            remote = api.lambda_by_name(fn_name)
            assert remote is not None
            folder = root / "functions" / fn_name
            if (folder / "config.json").is_file():
                local = project.load_function(root, fn_name)
                code, cfg = _local_text(local)
                r_code, r_cfg = _remote_text(remote)
                label = f"functions/{fn_name}/{project.CODE_FILES[local.runtime]}"
                if not _show_diff(code, r_code, cfg, r_cfg, f"local {label}", f"remote {fn_name}"):
                    console.print(f"{fn_name}: up to date")
                    continue
                if not yes and not typer.confirm(f"overwrite local {fn_name}?"):
                    console.print(f"{fn_name}: skipped")
                    continue
            project.write_function(root, remote)
            console.print(f"{fn_name}: pulled version {remote['version']} ({remote['state']})")


def push(name: NameArg = None, all_: AllOpt = False, yes: YesOpt = False) -> None:
    """Create or update remote functions from functions/<name>/, showing the diff first."""
    root = project.find_root()
    with context.open_api() as api:
        for fn_name in _names(root, name, all_):
            local = project.load_function(root, fn_name)
            cfg = local.config
            remote = api.lambda_by_name(local.name, required=False)
            if remote is None:
                created = api.create_lambda({
                    "name": local.name, "description": cfg.get("description") or "",
                    "runtime": local.runtime, "event_id": cfg.get("event"), "code": local.code,
                    "env": cfg.get("env") or {}, "dependencies": cfg.get("dependencies") or {}})
                console.print(f"{local.name}: created ({created['state']}, version "
                              f"{created['version']})")
                continue
            code, settings = _local_text(local)
            r_code, r_settings = _remote_text(remote)
            label = f"functions/{fn_name}/{project.CODE_FILES[local.runtime]}"
            if not _show_diff(r_code, code, r_settings, settings, f"remote {local.name}",
                              f"local {label}"):
                console.print(f"{local.name}: up to date")
                continue
            if not yes and not typer.confirm(f"overwrite remote {local.name}?"):
                console.print(f"{local.name}: skipped")
                continue
            updated = api.update_lambda(remote["id"], {
                "code": local.code, "description": cfg.get("description") or "",
                "env": cfg.get("env") or {}, "dependencies": cfg.get("dependencies") or {}})
            console.print(f"{local.name}: pushed version {updated['version']} ({updated['state']})")


def deploy(
    name: Annotated[str, typer.Argument(help="function name")],
    timeout: Annotated[float, typer.Option(help="seconds to wait for Productive")] = 600.0,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="return once the deployment started")] = False,
) -> None:
    """Deploy the function's current version and follow it until Productive or its failure."""
    with context.open_api() as api:
        fn = api.lambda_by_name(name)
        assert fn is not None
        started = api.deploy(fn["id"])
        if no_wait:
            console.print(f"{name}: deployment of version {started.get('version')} started")
            return
        deadline = time.monotonic() + timeout
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                      console=err, transient=True) as progress:
            task = progress.add_task(f"deploying {name} v{started.get('version')}: Deploying")
            while True:
                current = api.get_lambda(fn["id"])
                state = current.get("deployment_state")
                progress.update(task, description=f"deploying {name} v{started.get('version')}: {state}")
                if state == "Failed" or (state == "Deployed"
                                         and current.get("deployed_version") == started.get("version")):
                    break
                if time.monotonic() > deadline:
                    raise CliError(f"{name}: still {state} after {timeout:g} s", Exit.SERVER)
                time.sleep(0.5)
    if state == "Failed":
        raise CliError(f"{name}: deployment failed — {current.get('deployment_cause')}",
                       Exit.LAMBDA_FAILED)
    console.print(f"{name}: {current['state']} (version {current['deployed_version']} deployed)")


def undeploy(name: Annotated[str, typer.Argument(help="function name")]) -> None:
    """Undeploy the function: it returns to Draft."""
    with context.open_api() as api:
        fn = api.lambda_by_name(name)
        assert fn is not None
        api.undeploy(fn["id"])
    console.print(f"{name}: undeployed (Draft)")


def parse_payload(payload: str | None) -> Any:
    """``--payload`` as JSON, or ``@file`` holding JSON; none → null."""
    if payload is None:
        return None
    text = payload
    if payload.startswith("@"):
        try:
            text = Path(payload[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise CliError(f"cannot read {payload[1:]}: {exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CliError(f"--payload is not valid JSON: {exc}") from None


def invoke(
    name: Annotated[str, typer.Argument(help="function name")],
    payload: Annotated[str | None, typer.Option(help="JSON, or @file with JSON")] = None,
    local: Annotated[bool, typer.Option("--local", help="run functions/<name>/ in the local "
                                                         "runtime, no platform")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Invoke the function and print its result (exit 6 when the function fails)."""
    body = {"timestamp": int(time.time() * 1000), "headers": [], "payload": parse_payload(payload)}
    if local:
        from fnbus.devcli.local import run_local

        root = project.find_root()
        out = run_local(root, project.load_function(root, name), body)
        status = 200 if out.get("error") is None else 502
    else:
        with context.open_api() as api:
            fn = api.lambda_by_name(name)
            assert fn is not None
            status, out = api.invoke(fn["id"], body["payload"], body["headers"])
    if as_json:
        print_json(out)
    else:
        for line in out.get("logs") or []:
            err.print(f"[dim]{line.get('level', 'info')}[/dim] {line.get('message')}",
                      highlight=False)
        if status == 200:
            print_json(out.get("result"))
        else:
            e = out.get("error") or {}
            err.print(f"[red]{e.get('code') or e.get('kind')}[/red]: {e.get('message')}",
                      highlight=False)
    if status != 200:
        raise typer.Exit(int(Exit.LAMBDA_FAILED))
