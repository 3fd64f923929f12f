"""Process settings, read once from the environment (`MODEL_LEDGER_*`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import msgspec

_PREFIX = "MODEL_LEDGER_"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything configurable. Unset database/redis URLs mean the embedded stack."""

    home: Path = Path(".model-ledger")
    database_url: str | None = None
    redis_url: str | None = None
    # the schema owner's URL (or a superuser's): `migrate` uses it, and `serve`, `worker`
    # and `scorer` migrate at startup when it is set; database_url is the application role's
    migration_database_url: str | None = None
    # files holding the password of database_url / migration_database_url (compose secrets):
    # from_env puts it into the URL, which then names the user but no password
    database_password_file: Path | None = None
    migration_database_password_file: Path | None = None
    # refuse to start when the database role could alter the log (superuser, owner, ...);
    # otherwise that is logged as an error and reported by /ready
    require_least_privilege: bool = False
    host: str = "127.0.0.1"
    port: int = 8000
    # request bodies above this are refused with 413 before they are read whole
    max_body_bytes: int = 1_048_576
    # uploaded artifacts and datasets
    max_upload_bytes: int = 512 * 1_048_576
    # uploaded LightGBM models are read by sandbox processes, started when needed and kept:
    # this many files at once, each by a LightGBM child and a Treelite child; two, so that a
    # hostile file keeping its children busy until its deadline holds up no other upload;
    # each child may use this much address space (a model takes about 3 times its file
    # size to load, measured, plus 50 MB)
    lightgbm_sandbox_processes: int = 2
    lightgbm_sandbox_memory_mb: int = 4096
    # signed checkpoints of the chain head
    checkpoint_interval_seconds: float = 60.0
    signing_key_path: Path | None = None
    # each signed checkpoint is appended to this file (default <home>/witness.jsonl) and,
    # when set, POSTed to this URL (best effort): the head witnessed outside the database
    witness_path: Path | None = None
    witness_url: str | None = None
    # group commit: most events written in one append transaction
    append_batch_max_events: int = 1_000
    # a model's state is snapshotted every this many events of its stream (every eighth of
    # the stream once it is 8 times longer): an as-of read replays less than one interval
    model_snapshot_every: int = 250
    # arq queue; tests give each run its own so runs sharing a Redis cannot interfere
    queue_name: str = "model-ledger:jobs"
    # relay job requests from the log to the queue (API and worker processes; several may)
    dispatch_jobs: bool = True
    # attempts per job, the first included; then the job is recorded as failed
    job_max_tries: int = 3
    # one attempt of a job may run this long (compiling a large model takes minutes)
    job_timeout_seconds: float = 1800.0
    # the sweeper (in every process that dispatches): how often it looks for stalled jobs
    job_sweep_interval_seconds: float = 5.0
    # a queued job that no worker started this long while none is alive is requeued, at
    # most job_max_requeues times in a row, then failed "never started" (a job whose queue
    # entry Redis lost is requeued at once, within the same bound)
    job_start_deadline_seconds: float = 300.0
    job_max_requeues: int = 3
    # an attempt with no outcome this long past its timeout (and arq's own margins) is
    # requeued as a new attempt, or failed once job_max_tries attempts started
    job_run_grace_seconds: float = 60.0
    # processes for the heavy work of jobs (training, compiling, statistics)
    job_processes: int = 1
    # jobs one worker runs at a time
    worker_max_jobs: int = 4
    # a worker serves its own Prometheus /metrics here (0: not served); an in-process
    # worker's series appear on the API's /metrics anyway
    worker_metrics_port: int = 0
    # scheduled drift checks: every this many minutes (a divisor of 60), of each serving
    # version with at least drift_min_new_rows sampled inputs logged since its last check
    drift_check_minutes: int = 60
    drift_min_new_rows: int = 1_000
    # scheduled looks at every running A/B experiment: every this many minutes (a divisor of 60)
    experiment_look_minutes: int = 15
    # the window of a drift check on the prediction log: the latest this many sampled inputs
    drift_window_rows: int = 10_000
    # scheduled performance checks: every this many minutes (a divisor of 60), of each
    # version with at least performance_min_new_labels outcome labels since its last check
    performance_check_minutes: int = 60
    performance_min_new_labels: int = 200
    # scoring: a request body may be this large (10,000 rows of a few hundred features)
    score_max_body_bytes: int = 64 * 1_048_576
    score_max_rows: int = 10_000
    # `model-ledger scorer` listens here (the API keeps `port`)
    scorer_port: int = 8001
    # names this process in scorer.loaded events (stream scorer-<instance>); empty: host-pid
    scorer_instance: str = ""
    # scorer.loaded at most once per (model, environment, version, arm) per this long
    scorer_loaded_interval_seconds: float = 300.0
    # share of predictions whose input row is logged (the drift job's window)
    prediction_sample_rate: float = 0.1
    # log rows queued in memory at most; past it rows are dropped (and counted), not waited on
    prediction_log_max_pending_rows: int = 200_000
    # rows per COPY, and the longest a row waits before its batch is written
    prediction_log_batch_rows: int = 5_000
    prediction_log_flush_seconds: float = 0.2
    # logged predictions are deleted after this many days, checked this often
    prediction_retention_days: float = 30.0
    prediction_retention_interval_seconds: float = 3600.0
    # authentication reads tokens from a table in memory, refreshed on every append (LISTEN)
    # and at least this often; while the database is away it serves the tokens it knows for
    # at most auth_max_stale_seconds after its last successful read, then answers 503
    auth_poll_seconds: float = 0.25
    auth_max_stale_seconds: float = 300.0
    # what follows the log (views, tokens, routes, job dispatch) wakes at most this often:
    # appends meanwhile are taken together, so a replica's work is bounded by it, not by the
    # rate others write at; it is also the most a change waits longer to be followed
    follow_interval_seconds: float = 0.1
    db_pool_min: int = 2
    db_pool_max: int = 10
    log_level: str = "info"

    @property
    def embedded(self) -> bool:
        """True when neither store is configured and both run inside `home`."""
        return self.database_url is None and self.redis_url is None

    @property
    def signing_key_file(self) -> Path:
        return self.signing_key_path or self.home / "signing.key"

    @property
    def witness_file(self) -> Path:
        return self.witness_path or self.home / "witness.jsonl"

    @property
    def admin_token_file(self) -> Path:
        return self.home / "admin.token"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from `MODEL_LEDGER_<FIELD>` variables, then explicit overrides."""
        env = os.environ if environ is None else environ
        raw: dict[str, object] = {}
        for field in msgspec.structs.fields(cls):
            value = env.get(_PREFIX + field.name.upper())
            if value not in (None, ""):
                raw[field.name] = value
        raw.update({k: v for k, v in overrides.items() if v is not None})
        settings = msgspec.convert(raw, cls, strict=False, dec_hook=_decode_path)
        return msgspec.structs.replace(
            settings,
            database_url=_with_password_file(
                settings.database_url, settings.database_password_file, "DATABASE"
            ),
            migration_database_url=_with_password_file(
                settings.migration_database_url,
                settings.migration_database_password_file,
                "MIGRATION_DATABASE",
            ),
        )


def read_secret(path: Path) -> str:
    """A secret file's content without its trailing newlines (as the postgres image reads
    POSTGRES_PASSWORD_FILE); an empty secret is refused."""
    secret = path.read_text().rstrip("\n")
    if not secret:
        raise ValueError(f"{path} is empty")
    return secret


def _with_password_file(url: str | None, path: Path | None, name: str) -> str | None:
    """`url` with the password read from `path` put in (percent-encoded)."""
    if path is None:
        return url
    variable = f"{_PREFIX}{name}_PASSWORD_FILE"
    if url is None:
        raise ValueError(f"{variable} is set but {_PREFIX}{name}_URL is not")
    parts = urlsplit(url)
    if parts.username is None or parts.password is not None:
        raise ValueError(
            f"with {variable} set, {_PREFIX}{name}_URL must name a user and no password"
        )
    user, _, host = parts.netloc.rpartition("@")
    netloc = f"{user}:{quote(read_secret(path), safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def _decode_path(kind: type, value: object) -> object:
    if kind is Path and isinstance(value, str):
        return Path(value)
    raise NotImplementedError
