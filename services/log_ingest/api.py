"""Internal HTTP API of log-ingest (the gateway calls it; the public API is the gateway's).

Every route needs ``Authorization: Bearer <FNBUS_SERVICE_TOKEN>``.

- ``GET /internal/activations/{activation_id}[?account_id=]`` — the record of the
  latest attempt; 404 if unknown (or, with ``account_id``, of another account).
- ``GET /internal/activations?account_id=&lambda_id=&limit=`` — ``{"items": [...]}``:
  records (every attempt), newest finished first.
- ``GET /internal/logs?account_id=&activation_id=&lambda_id=&limit=`` —
  ``{"items": [...]}``: log lines ordered by time, then seq.

Items carry the field names of :class:`fnbus.schemas.ActivationRecord` and
:class:`fnbus.schemas.LogLine`, times as epoch milliseconds. ``account_id`` is
required on the lists so a caller cannot read across tenants by leaving it out.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from fnbus.errors import NotFound
from fnbus.internal_api import require_service
from services.log_ingest.records import activation_item, log_item
from services.log_ingest.store import IngestStore

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def _store(request: Request) -> IngestStore:
    store: IngestStore = request.app.state.store
    return store


Store = Annotated[IngestStore, Depends(_store)]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
AccountId = Annotated[str, Query(min_length=1)]

router = APIRouter(prefix="/internal", dependencies=[Depends(require_service)])


@router.get("/activations/{activation_id}")
async def get_activation(
    activation_id: str, store: Store, account_id: str | None = None
) -> dict[str, Any]:
    row = await store.latest_activation(activation_id, account_id=account_id)
    if row is None:
        raise NotFound(f"activation {activation_id} not found")
    return activation_item(row)


@router.get("/activations")
async def list_activations(
    store: Store, account_id: AccountId, lambda_id: str | None = None,
    limit: Limit = DEFAULT_LIMIT,
) -> dict[str, Any]:
    rows = await store.list_activations(account_id=account_id, lambda_id=lambda_id, limit=limit)
    return {"items": [activation_item(r) for r in rows]}


@router.get("/logs")
async def list_logs(
    store: Store, account_id: AccountId, activation_id: str | None = None,
    lambda_id: str | None = None, limit: Limit = DEFAULT_LIMIT,
) -> dict[str, Any]:
    rows = await store.list_log_lines(
        account_id=account_id, activation_id=activation_id, lambda_id=lambda_id, limit=limit
    )
    return {"items": [log_item(r) for r in rows]}
