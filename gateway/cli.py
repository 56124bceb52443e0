"""``gateway serve``, ``gateway reload`` and ``gateway demo`` (also ``python -m gateway``).

argparse from the standard library is enough for three subcommands and a handful of flags.
``serve --workers N`` (N > 1) hands over to :mod:`gateway.workers`. ``reload`` checks the
config file, then signals the running gateway (``gateway.pidfile``) to re-read it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from gateway import pidfile
from gateway.config import (
    ConfigError,
    Settings,
    load_settings,
    override_server,
    resolve_secrets,
)
from gateway.live import ReloadSource, hold_early_hangups
from gateway.pidfile import pid_file


def _config_path(arg: str | None, environ: Mapping[str, str]) -> Path:
    return Path(arg or environ.get("GATEWAY_CONFIG") or "config.yaml")


def serve(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from gateway.logs import configure_logging

    config_path = _config_path(args.config, environ)
    try:
        settings = override_server(
            load_settings(config_path, environ),
            host=args.host, port=args.port, workers=args.workers,
        )  # fmt: skip
        secrets = resolve_secrets(settings, environ)
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log.level)
    # From the moment the pid file names this process, `gateway reload` may signal it: a
    # SIGHUP during start-up is held (one worker applies it once started; a parent's workers
    # read the file when they start) rather than killing the process.
    hold_early_hangups()
    with pid_file(pidfile.path_for(settings)):
        if settings.server.workers > 1:
            from gateway.workers import run_workers

            return run_workers(settings, config_path)
        # Imported only now: the parent of several workers never builds the app (~30 MB).
        import uvicorn

        from gateway.app import create_app
        from gateway.workers import server_options

        def reread() -> Settings:
            return override_server(
                load_settings(config_path, environ),
                host=args.host, port=args.port, workers=args.workers,
            )  # fmt: skip

        app = create_app(settings, secrets, reload=ReloadSource(reread, environ))
        uvicorn.run(app, **server_options(settings))
    return 0


def reload(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Check the config file as the gateway will read it, then ask the gateway to re-read it.
    A file that does not validate is reported here, and the gateway is not signalled."""
    try:
        settings = load_settings(_config_path(args.config, environ), environ)
    except ConfigError as exc:
        print(f"gateway: not reloaded: {exc}", file=sys.stderr)
        return 2
    path = Path(args.pid_file) if args.pid_file else pidfile.path_for(settings)
    try:
        pid = pidfile.send_reload(path)
    except pidfile.NotRunning as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1
    print(f"gateway: asked process {pid} to reload its config (see its log)")
    return 0


def demo(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from gateway.demo import run_demo

    return run_demo(
        config_path=_config_path(args.config, environ),
        host=args.host or "127.0.0.1",
        port=args.port if args.port is not None else 8080,
        environ=environ,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("serve", "run the gateway"),
        ("demo", "run the gateway with simulated resellers and an embedded Redis"),
    ):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--config", help="config file (default $GATEWAY_CONFIG or config.yaml)")
        cmd.add_argument("--host", help="listen address (default from config)")
        cmd.add_argument("--port", type=int, help="listen port (default from config)")
        if name == "serve":
            cmd.add_argument(
                "--workers", type=int, help="worker processes (default server.workers, 1)"
            )
    cmd = sub.add_parser("reload", help="make the running gateway re-read its config file")
    cmd.add_argument("--config", help="config file (default $GATEWAY_CONFIG or config.yaml)")
    cmd.add_argument("--pid-file", help=f"default: redis.data_dir/{pidfile.NAME}")
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env = os.environ if environ is None else environ
    if args.command == "serve":
        return serve(args, env)
    if args.command == "reload":
        return reload(args, env)
    return demo(args, env)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
