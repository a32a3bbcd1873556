"""Public schedules endpoints under /api/v1 (filled in by the schedules issue)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
