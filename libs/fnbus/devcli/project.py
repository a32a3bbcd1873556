"""The local project layout of LivePerson's ``lpf``, and ``fnbus init``.

::

    <project>/
      settings.json                  local secrets and allowlist for `invoke --local`
      jsconfig.json                  editors resolve `require('lp-faas-toolbelt')` to the typings
      types/lp-faas-toolbelt/index.d.ts
      functions/<name>/index.js      (nodejs) or main.py (python)
      functions/<name>/config.json   name, description, event, runtime, env, dependencies
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

import fnbus
from fnbus.devcli.errors import CliError, Exit
from fnbus.devcli.output import console

RUNTIMES = ("nodejs", "python")
CODE_FILES = {"nodejs": "index.js", "python": "main.py"}
SETTINGS = "settings.json"
TYPINGS = Path("types") / "lp-faas-toolbelt" / "index.d.ts"

NODE_HELLO = """\
function lambda(input, callback) {
  // const { Toolbelt } = require('lp-faas-toolbelt');
  callback(null, `Hello World`);
}
"""
PYTHON_HELLO = '''\
def handler(input):
    # from lp_faas_toolbelt import Toolbelt
    return "Hello World"
'''
JSCONFIG = {
    "compilerOptions": {
        "checkJs": True, "module": "commonjs", "target": "es2022", "baseUrl": ".",
        "paths": {"lp-faas-toolbelt": ["./types/lp-faas-toolbelt"]},
    },
    "include": ["functions/**/*.js", "types/**/*.d.ts"],
}


def toolbelt_typings() -> Path:
    """The Node toolbelt's typings shipped with the runtimes (libs/runtimes/node)."""
    return Path(fnbus.__file__).resolve().parents[1] / "runtimes" / "node" / "lp-faas-toolbelt" / "index.d.ts"


def find_root(start: Path | None = None) -> Path:
    """The project directory: ``start`` (default: cwd) or the nearest parent with settings.json."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / SETTINGS).is_file() or (candidate / "functions").is_dir():
            return candidate
    raise CliError(f"{here} is not in an fnbus project (no {SETTINGS}): run `fnbus init` first")


@dataclass
class LocalFunction:
    """One ``functions/<name>/`` directory."""

    dir: Path
    config: dict[str, Any]
    code: str

    @property
    def name(self) -> str:
        return str(self.config.get("name") or self.dir.name)

    @property
    def runtime(self) -> str:
        return str(self.config.get("runtime") or "nodejs")

    @property
    def code_path(self) -> Path:
        return self.dir / CODE_FILES[self.runtime]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CliError(f"{path} is missing") from None
    except ValueError as exc:
        raise CliError(f"{path} is not valid JSON: {exc}") from None


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def load_function(root: Path, name: str) -> LocalFunction:
    folder = root / "functions" / name
    if not folder.is_dir():
        raise CliError(f"no function {name!r} in {root / 'functions'}", Exit.NOT_FOUND)
    config = _read_json(folder / "config.json")
    runtime = config.get("runtime") or "nodejs"
    if runtime not in RUNTIMES:
        raise CliError(f"{folder / 'config.json'}: runtime must be one of {', '.join(RUNTIMES)}")
    code_path = folder / CODE_FILES[runtime]
    if not code_path.is_file():
        raise CliError(f"{code_path} is missing")
    return LocalFunction(folder, config, code_path.read_text(encoding="utf-8"))


def local_names(root: Path) -> list[str]:
    functions = root / "functions"
    if not functions.is_dir():
        return []
    return sorted(p.name for p in functions.iterdir() if (p / "config.json").is_file())


def write_function(root: Path, remote: dict[str, Any]) -> LocalFunction:
    """Write a lambda as read from the API into ``functions/<name>/``."""
    runtime = str(remote.get("runtime") or "nodejs")
    folder = root / "functions" / str(remote["name"])
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "name": remote["name"], "description": remote.get("description") or "",
        "event": remote.get("event_id"), "runtime": runtime,
        "env": remote.get("env") or {}, "dependencies": remote.get("dependencies") or {},
    }
    write_json(folder / "config.json", config)
    code = str(remote.get("code") or "")
    (folder / CODE_FILES[runtime]).write_text(code, encoding="utf-8")
    return LocalFunction(folder, config, code)


def load_settings(root: Path) -> dict[str, Any]:
    path = root / SETTINGS
    data = _read_json(path) if path.exists() else {}
    if not isinstance(data, dict):
        raise CliError(f"{path} must be a JSON object")
    data.setdefault("secrets", {})
    data.setdefault("allowlist", [])
    if not isinstance(data["secrets"], dict) or not isinstance(data["allowlist"], list):
        raise CliError(f"{path}: 'secrets' is an object of key → value, 'allowlist' a list of hosts")
    return data


def init(
    name: Annotated[str | None, typer.Argument(help="the first function's name")] = None,
    runtime: Annotated[str, typer.Option(help="nodejs or python")] = "nodejs",
    event: Annotated[str | None, typer.Option(help="event id from `fnbus get events`")] = None,
    description: Annotated[str, typer.Option()] = "",
) -> None:
    """Create the project layout here (settings.json, typings, jsconfig.json) and a function."""
    if runtime not in RUNTIMES:
        raise CliError(f"--runtime must be one of {', '.join(RUNTIMES)}")
    root = Path.cwd()
    made: list[str] = []
    if not (root / SETTINGS).exists():
        write_json(root / SETTINGS, {"secrets": {}, "allowlist": []})
        made.append(SETTINGS)
    typings = root / TYPINGS
    source = toolbelt_typings()
    if not typings.exists() and source.is_file():
        typings.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, typings)
        made.append(str(TYPINGS))
    if not (root / "jsconfig.json").exists():
        write_json(root / "jsconfig.json", JSCONFIG)
        made.append("jsconfig.json")
    (root / "functions").mkdir(exist_ok=True)
    if name is not None:
        folder = root / "functions" / name
        if folder.exists():
            raise CliError(f"{folder} exists already", Exit.API_ERROR)
        folder.mkdir(parents=True)
        write_json(folder / "config.json", {
            "name": name, "description": description, "event": event, "runtime": runtime,
            "env": {}, "dependencies": {}})
        code_file = CODE_FILES[runtime]
        (folder / code_file).write_text(NODE_HELLO if runtime == "nodejs" else PYTHON_HELLO,
                                        encoding="utf-8")
        made += [f"functions/{name}/config.json", f"functions/{name}/{code_file}"]
    for path in made:
        console.print(f"created {path}")
    if not made:
        console.print("nothing to create: the project is complete")
