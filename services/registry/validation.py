"""Rules the registry applies to lambdas on save: first line, events, skills, domains."""

from __future__ import annotations

import re

from fnbus import catalog
from fnbus.api_models import MAX_CODE_CHARS
from fnbus.errors import Unprocessable
from fnbus.runner_protocol import check_first_line

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN = re.compile(rf"^(\*\.)?({_LABEL}\.)*{_LABEL}$")


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
    value = domain.strip().lower().rstrip(".")
    if len(value) > 253 or not _DOMAIN.match(value):
        raise Unprocessable(
            f"{domain!r} is not a host name; use e.g. api.example.com or *.example.com "
            "(one leading wildcard at most, no scheme, port or path)",
            code="invalid_domain",
        )
    return value
