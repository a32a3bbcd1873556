"""The developer CLI as one typer app; ``fnbus.cli.main`` hands it every non-operator command."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import click
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
        # Without standalone mode click returns typer.Exit's code instead of exiting.
        code = app(args=list(argv), prog_name="fnbus", standalone_mode=False)
    except CliError as exc:
        err.print(f"[red]error:[/red] {exc.message}", highlight=False)
        return int(exc.code)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.exceptions.Abort:
        err.print("aborted")
        return int(Exit.USAGE)
    except click.ClickException as exc:
        exc.show()
        return int(Exit.USAGE)
    except KeyboardInterrupt:
        return 130
    return code if isinstance(code, int) else 0
