"""The developer CLI as one typer app; ``fnbus.cli.main`` hands it every non-operator command."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import typer

from fnbus.devcli import auth, context, functions, observe, project, resources
from fnbus.devcli.config import DEFAULT_PROFILE
from fnbus.devcli.errors import CliError, Exit
from fnbus.devcli.output import err

app = typer.Typer(
    name="fnbus", no_args_is_help=True, pretty_exceptions_enable=False,
    help="fnbus for developers: write, push, deploy, invoke and debug functions.",
    epilog="Operator commands: fnbus serve|migrate|topics|local|admin (fnbus serve --help). "
           "Exit codes: 0 ok, 1 usage, 2 API error, 3 not found, 4 auth, 5 server or "
           "unreachable, 6 the function failed (docs/cli.md).")


@app.callback()
def _options(
    profile: Annotated[str, typer.Option(help="login profile", envvar="FNBUS_PROFILE")] = DEFAULT_PROFILE,
) -> None:
    context.selected["profile"] = profile


app.command()(auth.login)
app.command()(auth.logout)
app.command()(project.init)
app.command()(functions.pull)
app.command()(functions.push)
app.command()(functions.deploy)
app.command()(functions.undeploy)
app.command()(functions.invoke)
app.command()(observe.logs)
app.command()(observe.metrics)
app.add_typer(resources.get_app, name="get")
app.add_typer(resources.create_app, name="create")
app.add_typer(resources.add_app, name="add")


def run(argv: Sequence[str]) -> int:
    """Run one developer command; failures print one line and map to an exit code."""
    try:
        app(args=list(argv), prog_name="fnbus")
    except CliError as exc:
        err.print(f"[red]error:[/red] {exc.message}", highlight=False)
        return int(exc.code)
    except SystemExit as exc:
        # typer (standalone) exits: with 0 after --help, with 2 after a usage error (which
        # is our 1: 2 means the API refused), with 1 on an aborted prompt, or with the code
        # of a typer.Exit raised by a command.
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        return int(Exit.USAGE) if code == _CLICK_USAGE else code
    except KeyboardInterrupt:
        return 130
    return 0


_CLICK_USAGE = 2
