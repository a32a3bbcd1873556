"""The web console's sources and build (services/gateway/console/), checked without a browser.

The console is ES modules under src/ (one per page plus api.js), bundled by esbuild from
pinned npm packages into dist/ (console.js, console.css, index.html), which the gateway
serves under /console/. These tests read the sources (no markup parsing of data, no remote
URLs, every API call in api.js, no page over ~400 lines), run the build into a temporary
directory and serve it the way the gateway mounts it, and exercise the pages' pure helpers
and the Toolbelt completion list derived from the typings through Node.
tests/integration/test_console_browser.py drives the real thing in chromium.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = ROOT / "services" / "gateway" / "console"
SRC = CONSOLE / "src"
PAGES = ("home", "functions", "deployments", "schedules", "logs", "settings")
TYPINGS = ROOT / "libs" / "runtimes" / "node" / "lp-faas-toolbelt" / "index.d.ts"

needs_build = pytest.mark.skipif(
    shutil.which("node") is None or not (CONSOLE / "node_modules" / "esbuild").is_dir(),
    reason="needs node and the console's npm packages (deploy/stack.sh console_build)")


def _modules() -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(SRC.glob("*.js"))}


def _node(script: str) -> str:
    done = subprocess.run(["node", "--input-type=module", "-e", script], cwd=CONSOLE,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


# -- sources ----------------------------------------------------------------------------------
def test_one_module_per_page_plus_api() -> None:
    names = set(_modules())
    assert {f"{p}.js" for p in PAGES} | {"api.js", "main.js"} <= names


@pytest.mark.parametrize("path", sorted(SRC.glob("*.*")), ids=lambda p: p.name)
def test_no_file_over_400_lines_and_nothing_from_the_network(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count("\n") <= 400, f"{path.name} has {text.count(chr(10))} lines"
    assert "http://" not in text and "https://" not in text, f"{path.name} names a remote URL"
    assert "@import" not in text
    for url in re.findall(r"url\(([^)]*)\)", text):
        assert url.strip("'\" ").startswith("data:"), f"{path.name} loads {url}"


@pytest.mark.parametrize("name", sorted(_modules()))
def test_sources_never_parse_data_as_markup_or_code(name: str) -> None:
    js = _modules()[name]
    for forbidden in ("innerHTML", "outerHTML", "insertAdjacentHTML", "dangerouslySetInnerHTML",
                      "document.write", "eval(", "new Function", "DOMParser", "setAttribute('style'"):
        assert forbidden not in js, f"{name} uses {forbidden}"


def test_only_api_js_talks_to_the_network() -> None:
    for name, js in _modules().items():
        if name == "api.js":
            continue
        assert "fetch(" not in js and "XMLHttpRequest" not in js and "EventSource" not in js, name
        assert "/api/" not in js, f"{name} spells an API path; api.js owns them"
    api = _modules()["api.js"]
    assert "const API_ROOT" not in api  # one root, built in base()
    assert "'/api/v1/accounts/'" in api
    assert "sessionStorage" in api and "localStorage" not in api


@pytest.mark.parametrize("endpoint", [
    "/lambdas", "/deployments", "/versions", "/test", "/templates", "/events", "/metrics", "/logs",
    "/logs/stream", "/schedules", "/schedules/preview", "/domains", "/secrets", "/users",
    "/api-keys", "/oauth-clients", "/credentials", "/certificates", "/reports/settings",
    "/activations/"])
def test_api_js_covers_the_endpoint(endpoint: str) -> None:
    assert f"'{endpoint}" in _modules()["api.js"], f"api.js never calls {endpoint}"


def test_roles_offered_are_the_platform_roles() -> None:
    from fnbus.permissions import Role

    settings = _modules()["settings.js"]
    for role in Role:
        assert f"'{role.value}'" in settings


def test_packages_are_pinned_and_locked() -> None:
    package = json.loads((CONSOLE / "package.json").read_text(encoding="utf-8"))
    lock = json.loads((CONSOLE / "package-lock.json").read_text(encoding="utf-8"))
    deps = package["dependencies"]
    assert {"esbuild", "preact", "htm", "uplot", "codemirror", "@codemirror/lang-javascript",
            "@codemirror/lang-python", "@codemirror/autocomplete"} <= set(deps)
    for name, version in deps.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name} is not pinned: {version}"
        assert lock["packages"][f"node_modules/{name}"]["version"] == version


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str | None] = []
        self.stylesheets: list[str] = []
        self.inline: list[str] = []
        self.event_attrs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.event_attrs += [n for n, _ in attrs if n.startswith("on")]
        if "style" in a:
            self.inline.append(f"style attribute on <{tag}>")
        if tag == "script":
            self.scripts.append(a.get("src"))
        if tag == "style":
            self.inline.append("<style>")
        if tag == "link" and (a.get("rel") or "").lower() == "stylesheet":
            self.stylesheets.append(a.get("href") or "")

    def handle_data(self, data: str) -> None:
        if self.lasttag == "script" and data.strip():
            self.inline.append("inline script")


def test_index_loads_the_bundle_relatively_and_nothing_inline() -> None:
    refs = _Refs()
    refs.feed((SRC / "index.html").read_text(encoding="utf-8"))
    assert refs.scripts == ["console.js"] and refs.stylesheets == ["console.css"]
    assert not refs.inline and not refs.event_attrs


# -- the build ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundle, built into a temporary directory (dist/ is left alone)."""
    out = tmp_path_factory.mktemp("console-dist")
    done = subprocess.run(["node", "build.mjs", str(out)], cwd=CONSOLE, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return out


@needs_build
def test_build_writes_the_bundle_without_remote_references(built: Path) -> None:
    assert {"index.html", "console.js", "console.css"} <= {p.name for p in built.iterdir()}
    bundle = (built / "console.js").read_text(encoding="utf-8")
    assert "sourceMappingURL" not in bundle
    assert not re.search(r"""(?:src|href)=["']?(?:https?:)?//""", bundle)


@needs_build
async def test_build_is_served_as_the_gateway_mounts_it(built: Path) -> None:
    tmp_path = built
    app = Starlette(routes=[Mount("/console", StaticFiles(directory=tmp_path, html=True))])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        page = await c.get("/console/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<script src="console.js" defer></script>' in page.text
        script = await c.get("/console/console.js")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        style = await c.get("/console/console.css")
        assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
        assert ".uplot" in style.text and ".cm-failure-line" not in style.text  # editor styles go to its shadow root
        assert (await c.get("/console/package.json")).status_code == 404  # only dist/ is served


@needs_build
def test_toolbelt_completions_come_from_the_typings() -> None:
    out = json.loads(_node("""
const b = await import('./build.mjs');
const fs = await import('node:fs');
console.log(JSON.stringify(b.toolbeltMembers(fs.readFileSync(process.env.TYPINGS ?? '', 'utf8'))));
""".replace("process.env.TYPINGS ?? ''", json.dumps(str(TYPINGS)))))
    names = [m["name"] for m in out]
    declared = re.findall(r"^\s*static (\w+)\(", TYPINGS.read_text(encoding="utf-8"), re.M)
    assert names == declared
    assert {"HTTPClient", "SecretClient", "ContextServiceClient", "MTLSClient"} <= set(names)
    secret = next(m for m in out if m["name"] == "SecretClient")
    assert secret["signature"] == "(): SecretClient"


@needs_build
def test_pure_helpers(tmp_path: Path) -> None:
    helpers = tmp_path / "helpers.mjs"
    out = json.loads(_node(f"""
const b = await import('./build.mjs');
await b.buildHelpers({json.dumps(str(helpers))});
const m = await import({json.dumps(helpers.as_uri())});
const r = m.parseRoute('#logs?activation_id=a%2Fb');
const s = m.toSeries([
  {{bucket_start_ms: 60000, total: 3, invocations: {{SUCCEEDED: 2, TIMEOUT: 1}}, duration_ms: {{p50: 5, p95: 50}}}},
  {{bucket_start_ms: 120000, total: 0, invocations: {{}}, duration_ms: null}}]);
const history = [
  {{version: 1, action: 'deploy', state: 'Deployed', created_ms: 1}},
  {{version: 2, action: 'deploy', state: 'Failed', created_ms: 2}},
  {{version: 3, action: 'deploy', state: 'Deployed', created_ms: 3}},
  {{version: 1, action: 'deploy', state: 'Deployed', created_ms: 4}},
  {{version: 4, action: 'deploy', state: 'Deployed', created_ms: 5}}];
console.log(JSON.stringify({{
  route: [r.page, r.params.get('activation_id')], unknown: m.parseRoute('#nowhere').page,
  editor: m.parseRoute('#functions/abc%20d').arg,
  lines: [m.failureLine('SyntaxError: Unexpected token at line 3'), m.failureLine('index.js:7 line 7'),
          m.failureLine('image build failed'), m.failureLine(null)],
  rollback: m.rollbackChoices(history, 4).map((d) => d.version),
  series: s,
  sample: [m.samplePayload({{sample_payload: {{headers: [], payload: {{a: 1}}}}}}),
           m.samplePayload({{sample_payload: {{name: 'x'}}}}), m.samplePayload(undefined)],
  json: [m.parseJson('{{"a": 1}}', 'P'), m.parseJson('{{"a": 1,}}', 'P').ok, m.parseJson('  ', 'P')],
  durations: [m.duration(850), m.duration(1250), m.duration(null)],
}}));
"""))
    assert out["route"] == ["logs", "a/b"] and out["unknown"] == "home" and out["editor"] == "abc d"
    assert out["lines"] == [3, 7, None, None]
    assert out["rollback"] == [1, 3]  # newest first, distinct, successful only, not the current
    assert out["series"]["x"] == [60, 120] and out["series"]["total"] == 3
    assert out["series"]["byState"][0] == [2, 0] and out["series"]["byState"][3] == [1, 0]
    assert out["series"]["p95"] == [50, None]
    assert out["sample"] == [{"a": 1}, {"name": "x"}, {}]
    assert out["json"] == [{"ok": True, "value": {"a": 1}}, False, {"ok": True, "value": None}]
    assert out["durations"] == ["850 ms", "1.3 s", "—"]
