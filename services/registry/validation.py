"""Rules the registry applies to lambdas on save: first line, events, skills, domains."""

from __future__ import annotations

import ipaddress
import re

import idna

from fnbus import catalog
from fnbus.api_models import MAX_CODE_CHARS
from fnbus.egress import parse_ip_literal
from fnbus.errors import Unprocessable
from fnbus.runner_protocol import check_first_line

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_NAME = re.compile(rf"^({_LABEL}\.)*{_LABEL}$")


def check_code(code: str, runtime: str) -> None:
    if len(code) > MAX_CODE_CHARS:
        raise Unprocessable(
            f"code is {len(code):,} characters; the limit is {MAX_CODE_CHARS:,}",
            code="code_too_large",
        )
    problem = check_first_line(code, "node" if runtime == "nodejs" else runtime)
    if problem:
        raise Unprocessable(problem, code="invalid_first_line")


def check_event(event_id: str | None, skills: list[str]) -> None:
    if event_id is None:
        if skills:
            raise Unprocessable("skills filter only applies to lambdas bound to an event",
                                code="invalid_skills")
        return
    event = catalog.EVENTS.get(event_id)
    if event is None:
        raise Unprocessable(
            f"unknown event {event_id!r}; GET /api/v1/events lists the catalogue",
            code="unknown_event",
        )
    if skills and not event.skill_filter:
        raise Unprocessable(f"event {event_id} does not support skill filters",
                            code="invalid_skills")
    for skill in skills:
        if not skill.isdigit() or len(skill) > 20:
            raise Unprocessable(f"skill {skill!r} must be a numeric skill id", code="invalid_skills")


def normalise_domain(domain: str) -> str:
    """The allowlist entry for ``domain``: lower case, no trailing dot, IDNA labels in punycode.

    One wildcard at most, and only as the whole leading label followed by at least two
    labels (``*.example.com``; not ``*.*.example.com``, ``a.*.example.com``, ``*a.example.com``
    or ``*.com``). IPv4 literals are kept in dotted form (``0x7f.1`` becomes ``127.0.0.1``),
    the form the egress engine compares them in (fnbus.egress.host_allowed).
    """
    value = domain.strip().lower().rstrip(".")
    wildcard = value.startswith("*.")
    rest = value[2:] if wildcard else value
    if "*" in rest:
        raise Unprocessable(
            f"{domain!r} has a wildcard that is not the whole leading label; one wildcard at most, "
            "as in *.example.com",
            code="invalid_domain",
        )
    if not rest.isascii():
        try:
            rest = idna.encode(rest, uts46=True).decode("ascii")
        except idna.IDNAError:
            rest = ""
    address = parse_ip_literal(rest) if not wildcard else None
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    if len(rest) > 253 or not _NAME.match(rest):
        raise Unprocessable(
            f"{domain!r} is not a host name; use e.g. api.example.com or *.example.com "
            "(one leading wildcard at most, no scheme, port or path)",
            code="invalid_domain",
        )
    if wildcard and "." not in rest:
        raise Unprocessable(
            f"{domain!r} would allow every host under a top-level domain; a wildcard needs at least "
            "two labels after it, as in *.example.com",
            code="invalid_domain",
        )
    return f"*.{rest}" if wildcard else rest
