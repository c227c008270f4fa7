"""Operator actions: start a training run, follow its job, read live figures."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, status

from reelrank.errors import NotFoundError
from reelrank.service.deps import ADMIN, EngineDep, RuntimeDep
from reelrank.service.schemas import ERROR_RESPONSES, Id

router = APIRouter(tags=["operations"], responses=ERROR_RESPONSES, dependencies=[Depends(ADMIN)])


@router.post("/v1/admin/train", status_code=status.HTTP_202_ACCEPTED)
def start_training(runtime: RuntimeDep) -> dict:
    """Train on everything in the store, in the background; serving switches to the new model
    when the job is done. A second call while a job runs returns that job."""
    if runtime.training is None:
        raise HTTPException(status.HTTP_409_CONFLICT,
                            "this engine has no model registry, so it cannot publish models")
    return {"job_id": runtime.training.start().job_id}


@router.get("/v1/admin/jobs/{job_id}")
def get_job(job_id: Annotated[Id, Path()], runtime: RuntimeDep) -> dict:
    job = runtime.training.get(job_id) if runtime.training is not None else None
    if job is None:
        raise NotFoundError(f"no job {job_id!r}")
    return job.view()


@router.get("/v1/admin/trainer")
def trainer_status(engine: EngineDep, runtime: RuntimeDep) -> dict:
    """The online trainer in this process (``null`` when it runs elsewhere or not at all) and
    what serving runs: its version and the event time its weights have learned through."""
    meta = engine.serving_meta()
    return {
        "trainer": runtime.trainer_status(),
        "serving": {"version": engine.models.version, "base_version": meta.get("base_version"),
                    "through_ts": meta.get("through_ts"), "through_seq": meta.get("through_seq"),
                    "retrieval_version": meta.get("retrieval_version")},
    }
