"""Governance reads at scale: a model's history, the registry as of the past, rebuilds.

Over one log of N governance events across M models (default 1,000,000 over 1,000), every
goal is a ratio to a baseline measured in the same run on the same log:

G1  model history p99: `GET /v1/models/{name}/history`, called in-process (the Litestar app
    through httpx.ASGITransport, an auditor's token) vs a plain indexed
    `SELECT ... FROM events WHERE stream = $1 ORDER BY version` of the same rows (asyncpg,
    same pool); the service-level ratio (`Registry.history`, what the handler calls: the
    database renders each item's JSON) is reported beside it, and the handler's parts and
    the former path (`EventStore.read_stored` + `event_out`) for context
G2  registry as of a past position, p50: `Registry.view(str(position))` at 25, 50, 75 and
    99% of the log vs the current registry read `Registry.view(None)`
G3  projections rebuild: events/s through `Projector.rebuild()` vs the catch-up read rate
    of bench.append's E3 (`read_all` pages of 5,000, decoded) over the same log

The log is what the governance commands would append, built in Python for speed. Per model
about 90 versions, each registered (with its compile job) by the model's CI pipeline,
compiled by the worker, promoted to staging, compliance-checked where the tier's policy
requires it (and sometimes where not), approved by one or two approvers (never the
registrar; sometimes rejected, sometimes revoked and re-approved), promoted to production
in full or as a canary (a critical drift alert on a canary demotes it, caused by the alert),
watched for drift, sometimes rolled back; old versions retire, descriptions change, and the
tiers' policies are set now and then. Each append carries its actor's metadata, as a request
would, so the fold records who did what. All models are generated at once, so their events
interleave in the log as a fleet's do; a model's appends for one version are pipelined, and
group commit gathers the fleet's appends into large batches. The streams of a sample of
models are then re-decided by the pure deciders (`domain.decide`), event by event, to show
the log is one the server could have written.

The whole registry of the full log is large (1,000 models x ~98 versions): peak RSS of the
process is reported per phase. Redis is named but never contacted (the job dispatcher is
off: the log's jobs are done). The generator runs with
the cyclic GC paused (its own bookkeeping would cost it a third of its time); every measured
phase runs with the GC as the server has it, and reports the seconds the GC took.

The full run takes about ten minutes on the 2-core VM (G1's time budget is four of them);
`--quick` about a minute. Progress goes to stderr.

This module runs the phases and prints the report; the log is made by `bench.audit_gen`
(each model's story in `bench.audit_story`), re-decided by `bench.audit_decide`, and measured
by `bench.audit_history` (G1) and `bench.audit_measure` (G2, G3).

    uv run python -m bench.audit [--quick] [--events N] [--models M] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from app.resources import Resources, open_resources
from app.settings import Settings
from bench import common
from bench.audit_base import FULL, QUICK, Sizes, log
from bench.audit_decide import check_with_deciders
from bench.audit_gen import generate
from bench.audit_history import g1_history
from bench.audit_measure import g2_registry, g3_rebuild, timed_projection

GOALS = {
    "g1": ("history http/select p99", "<=", 2.0),
    "g2": ("as_of/current p50", "<=", 10.0),
    "g3": ("rebuild/catch-up read", ">=", 0.5),
}


# --- the run -----------------------------------------------------------------------------


async def main(sizes: Sizes, seed: int) -> dict[str, Any]:
    figures: dict[str, Any] = {"sizes": asdict(sizes), "seed": seed, "memory_mib": {}}
    async with (
        common.bench_server() as (server_url, source),
        common.fresh_database(server_url, prefix="ml_audit") as url,
    ):
        with tempfile.TemporaryDirectory(prefix="ml-audit-") as home:
            settings = _settings(Path(home), url)
            async with open_resources(settings) as res:
                figures["notes"] = await common.machine_notes(res.pool, source)
                names = await _the_log(res, sizes, seed, figures)
                await _measured(res, settings, names, sizes, figures)
    return figures | {"verdicts": verdicts(figures)}


def _settings(home: Path, database_url: str) -> Settings:
    return Settings(
        home=home,
        database_url=database_url,
        redis_url=os.environ.get("MODEL_LEDGER_BENCH_REDIS_URL", "redis://127.0.0.1:6379"),
        checkpoint_interval_seconds=3600,
        # the generated log's jobs are done; relaying its requests would fill Redis
        dispatch_jobs=False,
    )


def _memory(figures: dict[str, Any], phase: str) -> None:
    figures["memory_mib"][phase] = common.rss_mib()


async def _the_log(res: Resources, sizes: Sizes, seed: int, figures: dict[str, Any]) -> list[str]:
    """Generate the log, catch the views up, re-decide a sample; the models' names."""
    log(f"generating {sizes.events:,} events over {sizes.models:,} models")
    generated = await generate(res.store, sizes, seed)
    names: list[str] = generated.pop("names")
    figures["generate"] = generated
    log(f"generated: {generated}")
    _memory(figures, "generate")
    await res.pool.execute("VACUUM ANALYZE events")  # what autovacuum keeps up
    figures["catch_up"] = await timed_projection(res, res.projector.catch_up)
    log(f"catch-up: {figures['catch_up']}")
    _memory(figures, "catch_up")
    await res.pool.execute("VACUUM ANALYZE")
    checked = names[:: max(1, len(names) // sizes.checked_models)]
    figures["decided"] = await check_with_deciders(res.store, checked)
    log(f"re-decided: {figures['decided']}")
    figures["database"] = await _database_sizes(res)
    return names


async def _database_sizes(res: Resources) -> dict[str, int]:
    async def mib(query: str, *args: str) -> int:
        size: int = await res.pool.fetchval(query, *args)
        return round(size / 2**20)

    return {
        "size_mib": await mib("SELECT pg_database_size(current_database())"),
        "events_mib": await mib("SELECT pg_total_relation_size('events')"),
        **{
            f"{table}_mib": await mib("SELECT pg_total_relation_size($1)", table)
            for table in ("model_states", "model_snapshots")
        },
    }


async def _measured(
    res: Resources, settings: Settings, names: list[str], sizes: Sizes, figures: dict[str, Any]
) -> None:
    """G1, G2 and G3 on the log, in that order, with the memory after each."""
    figures["g1"] = await g1_history(res, settings, names, sizes)
    log(f"G1: {figures['g1']}")
    _memory(figures, "g1_history")
    figures["g2"] = await g2_registry(res, sizes)
    log(f"G2: {figures['g2']}")
    _memory(figures, "g2_registry")
    figures["g3"] = await g3_rebuild(res, sizes)
    log(f"G3: {figures['g3']}")
    _memory(figures, "g3_rebuild")


def verdicts(figures: dict[str, Any]) -> dict[str, tuple[float, str]]:
    values = {key: figures[key]["ratio"] for key in GOALS}
    passed = {
        k: v <= GOALS[k][2] if GOALS[k][1] == "<=" else v >= GOALS[k][2] for k, v in values.items()
    }
    return {k: (v, "PASS" if passed[k] else "MISS") for k, v in values.items()}


# --- the report --------------------------------------------------------------------------


def report(figures: dict[str, Any]) -> str:
    lines = [
        *_log_lines(figures),
        "",
        *_g1_lines(figures["g1"]),
        "",
        *_g2_lines(figures["g2"]),
        "",
        *_g3_lines(figures["g3"]),
        "",
        "MEMORY  peak RSS after each phase (MiB): "
        + ", ".join(f"{k} {v['peak']}" for k, v in figures["memory_mib"].items()),
        "",
        *_summary_lines(figures),
    ]
    return "\n".join(lines)


def _log_lines(figures: dict[str, Any]) -> list[str]:
    gen, catch = figures["generate"], figures["catch_up"]
    decided, db = figures["decided"], figures["database"]
    return [
        f"LOG  {gen['events']:,} events over {figures['sizes']['models']:,} models "
        f"({gen['versions_per_model']} versions each, {gen['policy_events']} policy changes)",
        f"     generated in {gen['seconds']} s = {gen['events_per_s']:,} ev/s "
        f"({gen['appends']:,} appends, {gen['events_per_append']} events each, group commit)",
        f"     projector catch-up {catch['seconds']} s = {catch['events_per_s']:,} ev/s",
        f"     re-decided {decided['events']:,} events of {decided['models']} models: "
        f"{decided['refused']} refused",
        f"     database {db['size_mib']} MiB (events {db['events_mib']} MiB, model_states "
        f"{db['model_states_mib']} MiB, model_snapshots {db['model_snapshots_mib']} MiB)",
    ]


def _g1_lines(g1: dict[str, Any]) -> list[str]:
    parts = ", ".join(f"{k} {v}" for k, v in g1["parts_ms"].items() if not k.startswith("alt_"))
    alternatives = ", ".join(
        f"{k[4:]} {v}" for k, v in g1["parts_ms"].items() if k.startswith("alt_")
    )
    return [
        f"G1   model history, {g1['iterations']} per op over {g1['models_sampled']} models "
        f"(~{g1['events_per_history']} events, {g1['response_kib']} KiB per response)",
        f"     {'':34}{'p50 ms':>10}{'p99 ms':>10}",
        *(
            f"     {label:34}{g1[f'{key}_p50_us'] / 1000:>10.2f}{g1[f'{key}_p99_us'] / 1000:>10.2f}"
            for key, label in (
                ("http", "GET history (in-process HTTP)"),
                ("service", "registry.history (the handler's)"),
                ("select", "plain SELECT by stream"),
            )
        ),
        f"     http/select p99 = {g1['ratio']}x (p50 {g1['http_p50_ratio']}x); "
        f"service/select p99 = {g1['service_ratio']}x",
        f"     handler parts, median ms: {parts}",
        f"     instead (context), median ms: {alternatives}",
    ]


def _g2_lines(g2: dict[str, Any]) -> list[str]:
    return [
        f"G2   registry view ({g2['versions_in_view']:,} versions, "
        f"{g2['view_json_mib']} MiB as JSON)",
        f"     current  p50 {g2['current_p50_ms']:>8} ms  "
        f"(model_states decode {g2['current_state_ms']} ms)",
        *(
            f"     as_of {p:>9} p50 {g2['as_of_p50_ms_by_position'][str(p)]:>8} ms  "
            f"{g2['ratio_by_position'][str(p)]:>6}x"
            for p in g2["positions"]
        ),
        f"     as_of pooled p50 {g2['as_of_p50_ms']} ms = {g2['ratio']}x current "
        f"(replay to the middle alone {g2['state_at_middle_ms']} ms; gc {g2['gc_seconds']} s)",
        f"     one model as of the same instants (?model=): p50 "
        f"{g2['one_model_as_of_p50_ms']} ms, p99 {g2['one_model_as_of_p99_ms']} ms",
    ]


def _g3_lines(g3: dict[str, Any]) -> list[str]:
    return [
        f"G3   rebuild of {g3['events']:,} events: {g3['rebuild_seconds']} s = "
        f"{g3['rebuild_eps']:,} ev/s (views identical after: "
        f"{g3['views_identical_after_rebuild']})",
        f"     catch-up read decoded {g3['read_decoded_eps']:,} ev/s "
        f"(raw keyset scan {g3['raw_scan_eps']:,} ev/s)",
        f"     rebuild/read = {g3['ratio']}x",
    ]


def _summary_lines(figures: dict[str, Any]) -> list[str]:
    lines = ["SUMMARY"]
    for key, (value, verdict) in figures["verdicts"].items():
        label, op, goal = GOALS[key]
        lines.append(f"    {key.upper()} {label:<24}{value:>8}x  goal {op} {goal}x  {verdict}")
    notes = figures["notes"]
    return [*lines, "    machine: " + ", ".join(f"{k}={v}" for k, v in notes.items())]


def cli() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50,000 events over 100 models")
    parser.add_argument("--events", type=int, help="events in the log (default 1,000,000)")
    parser.add_argument("--models", type=int, help="models in the log (default 1,000)")
    parser.add_argument("--seed", type=int, default=1, help="the generated log's seed")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write figures as JSON")
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    # the generated log's versions have no artifacts: the scorer warns of every deployment
    logging.getLogger("model_ledger.scoring").setLevel(logging.ERROR)
    sizes = QUICK if args.quick else FULL
    overrides = {k: v for k, v in (("events", args.events), ("models", args.models)) if v}
    sizes = Sizes(**(asdict(sizes) | overrides))
    figures = common.run(main(sizes, args.seed))
    print(report(figures))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")


if __name__ == "__main__":
    cli()
