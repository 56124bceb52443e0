"""``gateway serve --workers N``: N uvicorn worker processes behind one listening socket.

One asyncio process saturates one core; on a host with several, N workers use them. Everything
the workers must agree on is in Redis already (tasks, single-flight polling, circuits, leases,
rate limits, idempotency records), so they need no other coordination. The parent process:

- validates settings and secrets (the CLI did, before calling :func:`run_workers`);
- starts the embedded ``redis-server`` once, when ``redis.url`` is unset, and hands its URL to
  the workers, so they do not race for ``redis.data_dir``;
- makes a private directory for prometheus-client's multiprocess mode, so ``/metrics`` answers
  for every worker whichever one serves the scrape, and removes it at exit;
- runs uvicorn's supervisor, which binds the socket, spawns the workers, restarts a worker
  that dies and stops them all on SIGTERM or SIGINT; ``SIGHUP`` is forwarded to every worker,
  and each re-reads the config itself (``gateway.live``) instead of being restarted.

Workers are *spawned* (fresh interpreters), so they get nothing from the parent but the
environment: :func:`worker_environ` says what the parent adds to it, and
:func:`app_from_environment` (uvicorn's ``factory``) rebuilds the settings from the same file
and environment. Like the CLI, these two entry points are where the environment is read.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from gateway.config import ConfigError, Settings, load_settings, resolve_secrets
from gateway.embedded_redis import EmbeddedRedis, EmbeddedRedisError, die_with_parent
from gateway.logs import configure_logging

if TYPE_CHECKING:
    from litestar import Litestar

logger = logging.getLogger(__name__)

APP_FACTORY = "gateway.workers:app_from_environment"
CONFIG_VAR = "GATEWAY_CONFIG"
METRICS_DIR_VAR = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus-client reads it when imported: it must be in a worker's environment from the
start, which is why the parent sets it rather than the worker."""


def worker_environ(
    settings: Settings, config_path: Path, *, redis_url: str, metrics_dir: Path
) -> dict[str, str]:
    """What the parent adds to the workers' environment: the config file (absolute, the same
    one), the command line's server keys as ``GATEWAY_SERVER__*`` overrides, the Redis to use
    and the metrics directory. Secrets are in the environment already."""
    server = settings.server
    return {
        CONFIG_VAR: str(config_path.resolve()),
        "GATEWAY_SERVER__HOST": server.host,
        "GATEWAY_SERVER__PORT": str(server.port),
        "GATEWAY_SERVER__WORKERS": str(server.workers),
        "GATEWAY_REDIS__URL": redis_url,
        METRICS_DIR_VAR: str(metrics_dir),
    }


def server_options(settings: Settings) -> dict[str, Any]:
    """How uvicorn runs the gateway, one worker or several: its address; uvicorn's own logging
    and access log off (the gateway logs JSON itself); the lifespan on; 10 s for requests in
    flight on SIGTERM."""
    return {
        "host": settings.server.host,
        "port": settings.server.port,
        "log_config": None,
        "access_log": False,
        "lifespan": "on",
        "timeout_graceful_shutdown": 10,
    }


def run_workers(settings: Settings, config_path: Path) -> int:
    """The parent process: returns the exit status once every worker has stopped."""
    metrics_dir = Path(tempfile.mkdtemp(prefix="gateway-metrics-"))
    embedded = None
    try:
        redis_url = settings.redis.url
        if redis_url is None:
            embedded = EmbeddedRedis(settings.redis.data_dir)
            redis_url = embedded.start()
        # uvicorn spawns the workers with this process's environment; there is no other way in.
        os.environ.update(
            worker_environ(settings, config_path, redis_url=redis_url, metrics_dir=metrics_dir)
        )
        logger.info(
            "starting workers",
            extra={"workers": settings.server.workers, "metrics_dir": str(metrics_dir)},
        )
        return _supervise(settings)
    except EmbeddedRedisError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1
    finally:
        if embedded is not None:
            embedded.stop()
        _remove(metrics_dir)


def _supervise(settings: Settings) -> int:
    """What ``uvicorn.run(..., workers=N)`` does, keeping hold of the supervisor: ``run``
    returns normally even when a worker could not start, and that must not exit 0."""
    config = uvicorn.Config(
        APP_FACTORY, factory=True, workers=settings.server.workers, **server_options(settings)
    )
    sock = config.bind_socket()
    try:
        supervisor = _Supervisor(config, sockets=[sock])
        supervisor.run()
    finally:
        sock.close()
    failed = [p.pid for p in supervisor.processes if p.exitcode == STARTUP_FAILURE]
    if failed:
        logger.error("a worker failed to start", extra={"pids": failed})
        return STARTUP_FAILURE
    return 0


class _Supervisor(Multiprocess):
    """uvicorn's supervisor, but ``SIGHUP`` reaches the workers, which reload their config in
    place, where uvicorn would replace them one by one."""

    def handle_hup(self) -> None:
        for process in self.processes:
            pid = process.process.pid
            if pid is None or not process.process.is_alive():
                continue
            try:
                os.kill(pid, signal.SIGHUP)
            except ProcessLookupError:  # died just now; the supervisor restarts it
                logger.warning("worker gone before its reload signal", extra={"pid": pid})
        logger.info("SIGHUP forwarded to the workers", extra={"workers": len(self.processes)})


def _remove(metrics_dir: Path) -> None:
    try:
        shutil.rmtree(metrics_dir)
    except OSError as exc:  # left in the temporary directory; nothing reads it again
        logger.warning(
            "cannot remove the metrics directory",
            extra={"metrics_dir": str(metrics_dir), "error": str(exc)},
        )


def worker_app(environ: Mapping[str, str]) -> Litestar:
    """One worker's app, from the environment :func:`worker_environ` completed."""
    # Imported here, not at the top: the parent imports this module too, and stays a small
    # supervisor without the app (nor prometheus-client, which is only for the workers).
    from gateway.app import create_app
    from gateway.live import ReloadSource
    from gateway.metrics import Metrics

    config_path, metrics_dir = environ.get(CONFIG_VAR), environ.get(METRICS_DIR_VAR)
    if not config_path or not metrics_dir:
        raise ConfigError(
            f"{CONFIG_VAR} and {METRICS_DIR_VAR} are unset: {APP_FACTORY} is started by "
            "`gateway serve --workers N`"
        )
    settings = load_settings(Path(config_path), environ)
    secrets = resolve_secrets(settings, environ)

    def reread() -> Settings:
        return load_settings(Path(config_path), environ)

    configure_logging(settings.log.level)
    metrics = Metrics(
        list(secrets.provider_keys),  # the providers with an adapter (gateway.app)
        clients=[k.name for k in settings.auth.keys],
        multiprocess_dir=Path(metrics_dir),
    )
    return create_app(settings, secrets, metrics=metrics, reload=ReloadSource(reread, environ))


def app_from_environment() -> Litestar:
    """uvicorn's app factory, called once in each worker."""
    # A worker whose parent was killed must not keep serving on the shared socket (and would
    # be left with a dead embedded Redis): it goes when the parent goes, as redis-server does.
    die_with_parent()
    from gateway.live import hold_early_hangups  # not at the top: only a worker needs it

    hold_early_hangups()  # a reload forwarded while this worker starts must not kill it
    return worker_app(os.environ)
