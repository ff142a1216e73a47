"""The plan table, above the modules it draws on: which drill and faults each procedure runs under, the
bad-backup variants it must survive, and the oracles that judge it.

A procedure is drilled when a drill of scenarios/drills.py covers it (its `runbook_section`), or when
it is one of the runbook's scripts (gate.scripted). Everything else runs on a healthy system.
"""

from __future__ import annotations

from dataclasses import replace

from fixtures.engine.drill import Drill
from fixtures.engine.faults import BrokenYaml, DeleteRowsByMistake, StopPostgres
from gate import badbackups as bad
from gate import drilled, scripted
from gate.coverage import section_patterns
from gate.types import Plan, Variant

SCRIPT_TIMEOUT = scripted.SCRIPT_TIMEOUT


def drill_plans() -> tuple[Plan, ...]:
    """The plans of the procedures that a drill of the catalogue covers."""
    return (
        Plan("database-restore", drilled.prepare_database, drilled.DropDatabaseAfterFailedAttempt(),
             (drilled.newest_backup_restored, drilled.backend_restarted, drilled.services_running),
             variants=(Variant("truncated newest dump", bad.prepare_database_bad_newest,
                               DeleteRowsByMistake(), (bad.database_kept_safe,)),
                       Variant("live database damaged, newest dump valid", drilled.prepare_database,
                               DeleteRowsByMistake(),
                               (drilled.newest_backup_restored, drilled.live_database_copied,
                                drilled.services_running)))),
        Plan("uploads-restore", drilled.prepare_uploads, drilled.WipeUploadsLeaveStale(),
             (drilled.files_are_the_backup, drilled.uploads_kept_before, drilled.backend_restarted,
              drilled.services_running),
             variants=(Variant("truncated newest uploads archive", bad.prepare_uploads_bad_newest,
                               bad.RemoveSomeUploads(), (bad.uploads_kept_safe,)),
                       Variant("newest uploads archive with members escaping the folder",
                               bad.prepare_uploads_escaping, bad.RemoveSomeUploads(),
                               (bad.uploads_kept_safe, bad.nothing_written_outside)))),
        Plan("point-in-time-recovery", drilled.prepare_pitr, drilled.MistakeThenMore(),
             (drilled.point_in_time, drilled.recovery_settings_removed, drilled.data_directory_kept,
              drilled.backend_restarted, drilled.services_running), env=drilled.pitr_env,
             variants=(Variant("a WAL segment the target needs is missing", bad.prepare_pitr_missing_wal,
                               drilled.MistakeThenMore(),
                               (bad.not_promoted_short, bad.original_cluster_serves, drilled.services_running,
                                scripted.refusal_reported), env=drilled.pitr_env),)),
    )


def _auto_drill() -> Drill:
    from scenarios.drills import BACKEND_MASTER  # the catalogue imports pytest: only when a plan is asked

    return replace(BACKEND_MASTER, name="auto-recovery-script",
                   scenario="自動復旧スクリプト: mks-backend 停止",
                   runbook_section=f"復旧自動化スクリプト > {scripted.AUTO}", fault=scripted.StopBackend())


def script_plans() -> dict[str, tuple[Plan, Drill]]:
    """Section title -> (plan, drill) of each script."""
    from scenarios.drills import FULL_RECOVERY

    truth = scripted.exit_status_truthful
    nothing = scripted.prepare_nothing
    auto = Plan("auto-recovery-script", None, scripted.StopBackend(),
                (truth, drilled.services_running),
                variants=(Variant("healthy system", nothing, scripted.NothingBroken(),
                                  (truth, scripted.healthy_left_alone)),
                          Variant("backend running, its database down", nothing, StopPostgres(), (truth,)),
                          Variant("backend cannot start (its YAML broken)", nothing, BrokenYaml(),
                                  (truth,))))
    full_oracles = (truth, drilled.newest_backup_restored, drilled.files_are_the_backup,
                    drilled.backend_restarted, drilled.services_running)
    lost, refused = bad.RowsAndFilesLost(), scripted.refusal_reported
    kept = (bad.database_kept_safe, bad.uploads_kept_safe, refused)
    full = Plan(FULL_RECOVERY.name, scripted.prepare_full, None, full_oracles,
                variants=(Variant("database damaged, stale uploads, PostgreSQL stopped",
                                  scripted.prepare_full, scripted.DamagedThenServerDown(), full_oracles),
                          Variant("truncated newest dump", bad.prepare_full_bad_dump, lost, kept),
                          Variant("truncated newest uploads archive", bad.prepare_full_bad_archive, lost,
                                  kept),
                          Variant("newest uploads archive with members escaping the folder",
                                  bad.prepare_full_escaping, lost, (*kept, bad.nothing_written_outside))))
    return {scripted.AUTO: (auto, _auto_drill()), scripted.FULL: (full, FULL_RECOVERY)}


def catalogue() -> dict[str, Drill]:
    from scenarios.drills import CATALOGUE

    return {d.name: d for d in CATALOGUE}


def covers(drill: Drill, title: str) -> bool:
    """The drill's runbook_section is the procedure, or one of its subsections."""
    return any(p == title or p.startswith(title + " > ") for p in section_patterns(drill.runbook_section))


def drill_plan_for(title: str) -> tuple[Plan, Drill] | None:
    drills = catalogue()
    for plan in drill_plans():
        drill = drills.get(plan.drill)
        if drill is not None and covers(drill, title):
            return plan, drill
    return None


def script_plan_for(title: str) -> tuple[Plan, Drill] | None:
    """The script plan of a procedure titled `... > 自動復旧スクリプト` or `... > 完全復旧スクリプト`."""
    last = title.rsplit(" > ", 1)[-1].split(". ", 1)[-1]
    return script_plans().get(last)


def plan_for(title: str) -> tuple[Plan, Drill, float | None] | None:
    """The procedure's plan, its drill and its per-block timeout (None: the gate's), or None: not drilled."""
    found = drill_plan_for(title)
    if found is not None:
        return (*found, None)
    script = script_plan_for(title)
    return (*script, SCRIPT_TIMEOUT) if script is not None else None
