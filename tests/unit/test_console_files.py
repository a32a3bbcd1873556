"""The web console's static files (services/gateway/console/), checked without a browser.

The console is plain HTML, one script and one stylesheet, served by the gateway
under /console/. These tests read the files: that the page loads its script and
stylesheet from the same directory, that nothing comes from the network (it must
work offline), that the script never parses data as markup, that it only talks
to the same-origin /api/v1/ API and covers the endpoints the console offers, and
that Node accepts its syntax. The script's pure helpers (JSON error locations,
sample payloads, routes) are exercised through Node, and the files are served
the way the gateway mounts them (StaticFiles with html=True).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = ROOT / "services" / "gateway" / "console"
INDEX = CONSOLE / "index.html"
APP_JS = CONSOLE / "app.js"
STYLE = CONSOLE / "style.css"

needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="needs node on PATH")


class _Refs(HTMLParser):
    """Collects what the page loads and the ids it defines."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str | None] = []
        self.stylesheets: list[str] = []
        self.ids: set[str] = set()
        self.inline_script = False
        self.event_attrs: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"] or "")
        self.event_attrs += [name for name, _ in attrs if name.startswith("on")]
        if tag == "script":
            self.scripts.append(a.get("src"))
            self._in_script = True
        if tag == "link" and (a.get("rel") or "").lower() == "stylesheet":
            self.stylesheets.append(a.get("href") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_script = True


def _refs() -> _Refs:
    parser = _Refs()
    parser.feed(INDEX.read_text(encoding="utf-8"))
    return parser


def _is_relative(url: str) -> bool:
    parts = urlsplit(url)
    return not parts.scheme and not parts.netloc and not url.startswith("/")


def _js() -> str:
    return APP_JS.read_text(encoding="utf-8")


def _node(script: str, *args: str) -> str:
    """Run script with app.js as process.argv[1] and args after it."""
    done = subprocess.run(["node", "-e", script, str(APP_JS), *args], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


# -- the files ------------------------------------------------------------------------------
def test_the_three_files_exist() -> None:
    for path in (INDEX, APP_JS, STYLE):
        assert path.is_file(), f"missing {path.relative_to(ROOT)}"
        assert path.stat().st_size > 0, f"{path.relative_to(ROOT)} is empty"


def test_index_loads_app_js_and_style_css_relatively() -> None:
    refs = _refs()
    assert refs.scripts == ["app.js"], refs.scripts
    assert refs.stylesheets == ["style.css"], refs.stylesheets
    assert all(_is_relative(url) for url in refs.stylesheets + [s or "" for s in refs.scripts])
    assert not refs.inline_script, "no inline scripts: the page's CSP allows only app.js"
    assert not refs.event_attrs, f"no inline event handlers: {refs.event_attrs}"


@pytest.mark.parametrize("path", [INDEX, APP_JS, STYLE], ids=lambda p: p.name)
def test_nothing_is_loaded_from_the_network(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text, f"{path.name} names a remote URL"
    assert not re.search(r"""(?:src|href)\s*=\s*["']//""", text), "protocol-relative URL"
    assert "@import" not in text
    for url in re.findall(r"url\(([^)]*)\)", text):
        assert url.strip("'\" ").startswith("data:"), f"{path.name} loads {url}"


# -- the script ---------------------------------------------------------------------------------
def test_app_js_never_parses_data_as_markup() -> None:
    js = _js()
    for forbidden in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                      "new Function", "DOMParser", "createContextualFragment"):
        assert forbidden not in js, f"app.js uses {forbidden}"


def test_app_js_only_calls_the_same_origin_api() -> None:
    js = _js()
    assert js.count("fetch(") == 1, "every request goes through api()"
    assert "const API_ROOT = '/api/v1/accounts/';" in js
    assert "XMLHttpRequest" not in js and "WebSocket" not in js and "sendBeacon" not in js
    # Every literal path handed to api() is relative to the account.
    calls = re.findall(r"api\('(GET|POST|PUT|PATCH|DELETE)', '([^']*)'", js)
    assert calls, "no api() calls found"
    for method, path in calls:
        assert path == "" or path.startswith("/"), (method, path)
        assert "://" not in path and not path.startswith("//"), (method, path)
    # No other API root is spelled out anywhere.
    for literal in re.findall(r"'(/api/[^']*)'", js):
        assert literal.startswith("/api/v1/"), literal


@pytest.mark.parametrize("endpoint", ["/lambdas", "/deployments", "/invoke", "/test", "/secrets",
                                      "/domains", "/users", "/terms-of-use", "/templates", "/versions",
                                      "/events", "/api-keys", "/oauth-clients", "/credentials"])
def test_app_js_covers_the_endpoint(endpoint: str) -> None:
    assert f"'{endpoint}" in _js(), f"app.js never calls {endpoint}"


def test_every_element_the_script_looks_up_is_on_the_page() -> None:
    ids = _refs().ids
    looked_up = set(re.findall(r"""\$\('#([A-Za-z0-9_-]+)'\)""", _js()))
    assert looked_up, "no $('#…') lookups found"
    assert looked_up <= ids, f"missing in index.html: {sorted(looked_up - ids)}"
    for tab in ("functions", "invoke", "settings", "account"):
        assert f"tab-{tab}" in ids
        assert f'href="#{tab}"' in INDEX.read_text(encoding="utf-8")
    for details in ("d-versions", "d-deployments"):  # looked up as id + '-body' / '-status'
        assert {f"{details}-body", f"{details}-status"} <= ids


def test_roles_offered_are_the_platform_roles() -> None:
    from fnbus.permissions import Role

    js = _js()
    for role in Role:
        assert f"'{role.value}'" in js


@needs_node
def test_node_accepts_the_syntax_of_app_js() -> None:
    done = subprocess.run(["node", "--check", str(APP_JS)], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 0, done.stderr


@needs_node
def test_json_errors_say_where_the_text_is_wrong() -> None:
    script = r"""
const m = require(process.argv[1]);
const out = {};
for (const [name, text] of Object.entries({
  trailing: '{"a": 1,}',
  second_line: '{\n  "a": 1\n  "b": 2\n}',
  bare_word: 'nope',
  unterminated: '[1, 2',
  empty: '   ',
  valid: '{"a": [1, {"b": null}]}',
})) out[name] = m.parseJsonText(text, 'Payload');
console.log(JSON.stringify(out));
"""
    out = json.loads(_node(script))
    assert out["valid"] == {"ok": True, "value": {"a": [1, {"b": None}]}}
    assert out["trailing"]["ok"] is False
    assert (out["trailing"]["line"], out["trailing"]["column"]) == (1, 9)
    assert out["trailing"]["message"].startswith("Payload is not valid JSON at line 1, column 9: ")
    assert (out["second_line"]["line"], out["second_line"]["column"]) == (3, 3)
    assert out["second_line"]["excerpt"] == '  "b": 2\n  ^'
    assert (out["bare_word"]["line"], out["bare_word"]["column"]) == (1, 1)
    assert (out["unterminated"]["line"], out["unterminated"]["column"]) == (1, 6)
    assert out["empty"]["ok"] is False and "empty" in out["empty"]["message"]


@needs_node
def test_own_json_scanner_agrees_with_json_parse() -> None:
    # Used when the browser's JSON.parse message does not give a position.
    cases = ['{"a": tru}', "01", "[1 2]", '{"a":"\\q"}', "{} x", "-", '"x\ny"', "[,]", '{"a"}',
             ' {"k": [1, -2.5e3, {"z": null}], "s": "\\u00e9"} ', '"ok"', "1e5", "[]", "{}", "true"]
    script = """
const m = require(process.argv[1]);
const cases = JSON.parse(process.argv[2]);
console.log(JSON.stringify(cases.map(function (t) {
  let valid = true;
  try { JSON.parse(t); } catch (e) { valid = false; }
  return [valid, m.scanJson(t)];
})));
"""
    results = json.loads(_node(script, json.dumps(cases)))
    for text, (valid, position) in zip(cases, results, strict=True):
        assert valid == (position is None), (text, valid, position)
    positions = dict(zip(cases, (p for _, p in results), strict=True))
    assert positions['{"a": tru}'] == 6
    assert positions["[1 2]"] == 3
    assert positions["{} x"] == 3


@needs_node
def test_pure_helpers() -> None:
    script = r"""
const m = require(process.argv[1]);
console.log(JSON.stringify({
  sampleWrapped: m.samplePayload({sample_payload: {headers: [{key: 'k', value: 'v'}], payload: {a: 1}}}),
  sampleBare: m.samplePayload({sample_payload: {name: 'fnbus'}}),
  route: m.parseRoute('#functions/abc%2Fdef'),
  routeUnknown: m.parseRoute('#nowhere'),
  routeInvoke: m.parseRoute('#invoke/id-1'),
  durations: [m.formatDuration(850), m.formatDuration(1250), m.formatDuration(65000), m.formatDuration(null)],
  env: [m.stringMapProblem({A: 'x'}, 'Env'), m.stringMapProblem({A: 1}, 'Env'), m.stringMapProblem([], 'Env')],
  headers: [m.headersProblem([]), m.headersProblem([{key: 'a', value: 'b'}]), m.headersProblem({}),
            m.headersProblem([{key: 'a'}])],
  list: m.parseList(' a, b ,,c '),
}));
"""
    out = json.loads(_node(script))
    assert out["sampleWrapped"] == {"payload": {"a": 1}, "headers": [{"key": "k", "value": "v"}]}
    assert out["sampleBare"] == {"payload": {"name": "fnbus"}, "headers": []}
    assert out["route"] == {"tab": "functions", "arg": "abc/def"}
    assert out["routeUnknown"] == {"tab": "functions", "arg": ""}
    assert out["routeInvoke"] == {"tab": "invoke", "arg": "id-1"}
    assert out["durations"] == ["850 ms", "1.3 s", "1 min 5 s", "—"]
    assert out["env"][0] is None and "string" in out["env"][1] and "object" in out["env"][2]
    assert out["headers"][:2] == [None, None]
    assert "array" in out["headers"][2] and "item 1" in out["headers"][3]
    assert out["list"] == ["a", "b", "c"]


# -- served as the gateway mounts it ------------------------------------------------------------
async def test_served_with_static_files_html_mode() -> None:
    app = Starlette(routes=[Mount("/console", StaticFiles(directory=CONSOLE, html=True))])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        page = await client.get("/console/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert '<script src="app.js" defer></script>' in page.text
        script = await client.get("/console/app.js")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        style = await client.get("/console/style.css")
        assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
