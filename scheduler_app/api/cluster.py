"""Operator routes for the cluster: who leads and which processes run; make the leader step down."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from scheduler_app.api.deps import AdminDep, AuditDep, ClusterDep
from scheduler_app.api.errors import ServiceRoute
from scheduler_app.api.schemas import ClusterLeader, ClusterProcess, ClusterStatus, ResignResult

router = APIRouter(
    prefix="/admin/cluster", tags=["admin"], dependencies=[AdminDep], route_class=ServiceRoute
)


@router.get(
    "",
    response_model=ClusterStatus,
    responses={401: {"description": "Missing or wrong admin token."}},
)
async def cluster_status(cluster: ClusterDep) -> ClusterStatus:
    """The leader (its process, term and lease) and every process seen lately, with its role."""
    view = await asyncio.to_thread(cluster.view)
    leader = view.leader
    return ClusterStatus(
        leader=None
        if leader is None
        else ClusterLeader(id=leader.id, term=leader.term, lease_expires=leader.lease_expires),
        processes=[
            ClusterProcess(
                id=p.id,
                host=p.host,
                pid=p.pid,
                role=p.role,
                version=p.version,
                started_at=p.started_at,
                last_seen=p.last_seen,
            )
            for p in view.processes
        ],
    )


@router.post(
    "/resign",
    response_model=ResignResult,
    responses={
        401: {"description": "Missing or wrong admin token."},
        409: {"description": "No process leads now."},
    },
)
async def resign_leadership(cluster: ClusterDep, audit: AuditDep) -> ResignResult:
    """Make the leader step down (forced failover, for maintenance): it lets its jobs under way
    finish and gives the lease up, and a follower takes over. Works through any process."""
    async with audit.recorded_async("resign_leadership") as outcome:
        resigned = await cluster.resign()
        outcome.detail = f"leader {resigned.id} (term {resigned.term}) asked to step down"
    return ResignResult(id=resigned.id, term=resigned.term)
