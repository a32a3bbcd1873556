"""Public events endpoints under /api/v1 (filled in by the events issue)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
