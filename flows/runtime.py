"""Process-wide runtime for flows: settings, the Spark session and run folders.

In: :class:`jobs.core.config.Settings`. Out: one cached Spark session per process, the run date
(defaulting to the synthetic world's end date, else yesterday UTC) and the run folder
``<runs>/dt=YYYY-MM-DD``. Called by the Prefect flows and the CLI; no business logic here.
"""

from __future__ import annotations

import functools
import json
import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from pyspark.sql import SparkSession

from jobs.core.config import Settings, load_settings
from jobs.core.layout import RunLayout
from jobs.core.session import build_session

_SESSION: SparkSession | None = None


def configure_prefect_env(settings: Settings) -> None:
    """Keep Prefect's local state under the farmwatch home and its telemetry off."""
    os.environ.setdefault("PREFECT_HOME", str(settings.home / "prefect"))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    # The temporary server shares two cores with Spark; Prefect's 20 s default start-up wait
    # was seen to expire while a large job was running.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


def settings_for(config_file: str | None) -> Settings:
    """Load settings (optionally from a TOML file)."""
    return load_settings(config_file) if config_file else load_settings()


def spark_for(settings: Settings) -> SparkSession:
    """The process's Spark session (created on first use)."""
    global _SESSION
    if _SESSION is None:
        _SESSION = build_session(settings.spark, settings.home / "checkpoints", settings.lake)
    return _SESSION


def resolve_run_date(settings: Settings, run_date: str | None) -> date:
    """Explicit date, else the synthetic world's end date, else yesterday (UTC)."""
    if run_date:
        return date.fromisoformat(run_date)
    world = settings.lake.lake_path / "_world.json"
    if world.is_file():
        return date.fromisoformat(json.loads(world.read_text())["end_date"])
    return datetime.now(UTC).date() - timedelta(days=1)


@functools.cache
def code_version() -> str:
    """Installed farmwatch version plus the git commit when run from a checkout."""
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("farmwatch")
    except PackageNotFoundError:
        installed = "unknown"
    repo = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return installed
    return f"{installed}+g{commit}"


def layout_for(settings: Settings, run_date: date) -> RunLayout:
    """The layout of one run date's folder (re-running a date overwrites it)."""
    path = settings.lake.runs_path / f"dt={run_date.isoformat()}"
    path.mkdir(parents=True, exist_ok=True)
    return RunLayout(path)
