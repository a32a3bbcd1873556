"""The internal HTTP API of log-ingest over a fake store (no database, no Kafka)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import pytest

from fnbus.config import Settings
from fnbus.schemas import ActivationRecord, EventSource, InvocationOutcome, LogLevel, LogLine
from fnbus.service import create_service_app
from services.log_ingest.api import router
from services.log_ingest.records import (
    ACTIVATION_COLUMNS,
    LOG_COLUMNS,
    activation_row,
    log_row,
)

TOKEN = "unit-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def stored(row: tuple[Any, ...], names: tuple[str, ...]) -> dict[str, Any]:
    out = dict(zip(names, row, strict=True))
    for key in ("result", "error"):
        if out.get(key) is not None:
            out[key] = json.loads(out[key])
    return out


RECORD = ActivationRecord(
    activation_id="act-1", account_id="acc-1", lambda_id="lam-1", source=EventSource.HTTP,
    attempt=2, outcome=InvocationOutcome.SUCCEEDED, result={"x": 1},
    started_ms=1_000, finished_ms=1_250, duration_ms=250,
)
LINE = LogLine(
    activation_id="act-1", account_id="acc-1", lambda_id="lam-1", seq=0,
    level=LogLevel.ERROR, message="bad", ts_ms=1_100,
)


class FakeStore:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def latest_activation(
        self, activation_id: str, *, account_id: str | None = None
    ) -> Mapping[str, Any] | None:
        self.calls.append(("latest", {"activation_id": activation_id, "account_id": account_id}))
        if activation_id == RECORD.activation_id and account_id in (None, RECORD.account_id):
            return stored(activation_row(RECORD), ACTIVATION_COLUMNS)
        return None

    async def list_activations(self, **kwargs: Any) -> list[Mapping[str, Any]]:
        self.calls.append(("activations", kwargs))
        return [stored(activation_row(RECORD), ACTIVATION_COLUMNS)]

    async def list_log_lines(self, **kwargs: Any) -> list[Mapping[str, Any]]:
        self.calls.append(("logs", kwargs))
        return [stored(log_row(LINE), LOG_COLUMNS)]


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
async def client(store: FakeStore) -> AsyncIterator[httpx.AsyncClient]:
    app = create_service_app("log_ingest", Settings(service_token=TOKEN))
    app.include_router(router)
    app.state.store = store
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://li") as c:
        yield c


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {TOKEN}"},
     {"Authorization": "Bearer "}, {"Authorization": TOKEN}],
)
@pytest.mark.parametrize(
    "path", ["/internal/activations/act-1", "/internal/activations?account_id=acc-1",
             "/internal/logs?account_id=acc-1", "/internal/logs"],
)
async def test_requests_without_the_service_token_are_refused(
    client: httpx.AsyncClient, store: FakeStore, headers: dict[str, str], path: str
) -> None:
    response = await client.get(path, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "service_token_required"
    assert store.calls == []


async def test_scheme_is_case_insensitive(client: httpx.AsyncClient) -> None:
    response = await client.get("/internal/activations/act-1", headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status_code == 200


async def test_get_activation(client: httpx.AsyncClient) -> None:
    response = await client.get("/internal/activations/act-1", headers=AUTH)
    assert response.status_code == 200
    assert response.json() == RECORD.model_dump(mode="json")


async def test_unknown_activation_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/internal/activations/missing", headers=AUTH)
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": "activation missing not found"}}
    other = await client.get("/internal/activations/act-1?account_id=acc-2", headers=AUTH)
    assert other.status_code == 404


async def test_lists_pass_filters_and_wrap_items(client: httpx.AsyncClient, store: FakeStore) -> None:
    response = await client.get(
        "/internal/activations", params={"account_id": "acc-1", "lambda_id": "lam-1", "limit": 5},
        headers=AUTH,
    )
    assert response.status_code == 200
    assert response.json() == {"items": [RECORD.model_dump(mode="json")]}
    assert store.calls[-1] == ("activations", {"account_id": "acc-1", "lambda_id": "lam-1", "limit": 5})

    response = await client.get(
        "/internal/logs", params={"account_id": "acc-1", "activation_id": "act-1"}, headers=AUTH
    )
    assert response.json() == {"items": [LINE.model_dump(mode="json")]}
    assert store.calls[-1] == (
        "logs", {"account_id": "acc-1", "activation_id": "act-1", "lambda_id": None, "limit": 100}
    )


@pytest.mark.parametrize(
    "query", ["", "?account_id=", "?account_id=a&limit=0", "?account_id=a&limit=1001",
              "?account_id=a&limit=ten"],
)
async def test_bad_list_queries_are_422(client: httpx.AsyncClient, query: str) -> None:
    for path in ("/internal/activations", "/internal/logs"):
        response = await client.get(path + query, headers=AUTH)
        assert response.status_code == 422, (path, query)
        assert response.json()["error"]["code"] == "invalid_request"
