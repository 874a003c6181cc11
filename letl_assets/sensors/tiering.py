"""Tier policy in Dagster: a sensor that watches the plan, a job that applies it, and a job for one move.

The sensor only plans (cheap: catalog and access-log queries) and requests a run of
``tier_policy_job`` when there is something to move. The job plans again when it runs,
so it acts on the lake as it is then, and applies the moves with request ids derived
from the sensor's plan key: re-executing a failed run repeats nothing that was done.
Every move is reported as an ``AssetObservation`` on the version's asset, with the
tier, the reason and the rule (the keys of ``sensors/moves.py`` under ``letl/``), in the run that made it;
``tier_moves_sensor`` reports it too, as it does every move, whatever made it.
"""

import dagster as dg

from letl.lake.errors import LetlError, one_line
from letl.lake.moves import Mover, MoveResult
from letl.lake.policy import ApplyError, PlannedMove, apply, plan, plan_key
from letl_assets.resources.tiers import LakeResource

PLAN_KEY_TAG = "letl/plan_key"
POLICY_OP = "apply_tier_policy"


class TierPolicyConfig(dg.Config):
    dry_run: bool = False


class TierMoveConfig(dg.Config):
    version_id: str
    to_tier: str
    request_id: str


def _observation(move: PlannedMove, result: MoveResult) -> dg.AssetObservation:
    return dg.AssetObservation(
        asset_key=dg.AssetKey.from_user_string(move.asset_key),
        partition=move.partition or None,
        metadata={
            "letl/tier": result.dst_tier,
            "letl/from_tier": result.src_tier,
            "letl/reason": move.reason,
            "letl/rule": move.rule,
            "letl/version_id": move.version_id,
            "letl/branch": move.branch,
            "letl/request_id": result.request_id,
            "letl/state": result.state,
            "letl/repeated": result.repeated,
            "letl/bytes": move.bytes,
        },
    )


@dg.op(name=POLICY_OP, description="Plan the tier policy's moves and apply them (or only log them, on a dry run).")
def apply_tier_policy(context: dg.OpExecutionContext, config: TierPolicyConfig, lake: LakeResource) -> None:
    the_lake = lake.get_lake()
    planned = plan(the_lake)
    verb = "would move" if config.dry_run else "moving"
    context.log.info(f"tier policy: {len(planned)} move(s) planned{' (dry run: nothing moves)' if config.dry_run else ''}")
    for move in planned:
        context.log.info(f"{verb} {move.asset_key} {move.version_id} {move.src_tier} -> {move.dst_tier}: {move.reason}")
    if config.dry_run or not planned:
        return
    prefix = f"policy:{context.run.tags.get(PLAN_KEY_TAG) or context.run_id}"
    try:
        apply(the_lake, planned, prefix, on_move=lambda m, r: context.log_event(_observation(m, r)))
    except ApplyError as exc:
        raise dg.Failure(description=str(exc), metadata={"applied": len(exc.results), "failed": len(exc.failures)}) from exc


@dg.job(executor_def=dg.in_process_executor, description="Apply the tier policy: watermarks, idle, promotion, superseded.")
def tier_policy_job():
    apply_tier_policy()


@dg.op(description="Move one version to a tier: copy, verify, switch, delete; idempotent by request id.")
def move_version(context: dg.OpExecutionContext, config: TierMoveConfig, lake: LakeResource) -> None:
    the_lake = lake.get_lake()
    version = the_lake.catalog.get(config.version_id)
    try:
        result = Mover(the_lake).move(config.version_id, config.to_tier, config.request_id)
    except (LetlError, ValueError) as exc:
        raise dg.Failure(description=f"move of {config.version_id} to {config.to_tier} refused: {one_line(exc)}") from exc
    note = " (repeated request: nothing done)" if result.repeated else ""
    context.log.info(f"{result.request_id}: {result.version_id} {result.src_tier} -> {result.dst_tier}: {result.state}{note}")
    move = PlannedMove(version.version_id, version.asset_key, version.partition, result.src_tier, result.dst_tier,
                       f"requested move (request {config.request_id})", version.bytes, "manual", version.branch)
    context.log_event(_observation(move, result))


@dg.job(executor_def=dg.in_process_executor, description="Move one version between tiers (the Dagster face of `letl tier move`).")
def tier_move_job():
    move_version()


# By name, not job=tier_policy_job: Definitions would copy a sensor holding the job object to bind the
# job's resources, and that copy passes `owners`, a beta parameter, warning on every load.
@dg.sensor(
    job_name=tier_policy_job.name,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests a tier_policy_job run when the tier policy plans any move.",
)
def tier_policy_sensor(context: dg.SensorEvaluationContext, lake: LakeResource):
    the_lake = lake.get_lake()
    planned = plan(the_lake)
    if not planned:
        return dg.SkipReason("tier policy: nothing to move")
    key = plan_key(the_lake, planned)
    rules = sorted({m.rule for m in planned})
    context.log.info(f"tier policy: {len(planned)} move(s) planned ({', '.join(rules)}); requesting a run")
    return dg.RunRequest(
        run_key=f"tier-policy-{key}",
        run_config=dg.RunConfig(ops={POLICY_OP: TierPolicyConfig(dry_run=False)}),
        tags={PLAN_KEY_TAG: key, "letl/planned_moves": str(len(planned)), "letl/rules": ",".join(rules)},
    )


jobs = [tier_policy_job, tier_move_job]
sensors = [tier_policy_sensor]
