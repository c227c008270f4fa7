"""Operator actions: start a training run, follow its job, read live figures."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, status

from reelrank.errors import NotFoundError
from reelrank.service.deps import ADMIN, EngineDep
from reelrank.service.schemas import ERROR_RESPONSES

router = APIRouter(tags=["operations"], responses=ERROR_RESPONSES, dependencies=[Depends(ADMIN)])


@router.post("/v1/admin/train", status_code=status.HTTP_202_ACCEPTED)
def start_training(engine: EngineDep) -> dict:
    """Train on everything in the store, in the background; serving switches to the new model
    when the job is done. A second call while a job runs returns that job."""
    if engine.training is None:
        raise HTTPException(status.HTTP_409_CONFLICT,
                            "this engine has no model registry, so it cannot publish models")
    return {"job_id": engine.training.start().job_id}


@router.get("/v1/admin/jobs/{job_id}")
def get_job(job_id: str, engine: EngineDep) -> dict:
    job = engine.training.get(job_id) if engine.training is not None else None
    if job is None:
        raise NotFoundError(f"no job {job_id!r}")
    return job.view()
