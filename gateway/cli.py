"""``gateway serve`` and ``gateway demo`` (also ``python -m gateway``).

argparse from the standard library is enough for two subcommands and a handful of flags.
``serve --workers N`` (N > 1) hands over to :mod:`gateway.workers`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from gateway.config import ConfigError, load_settings, override_server, resolve_secrets


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
    if settings.server.workers > 1:
        from gateway.workers import run_workers

        return run_workers(settings, config_path)
    # Imported only now: the parent of several workers never builds the app (~30 MB).
    import uvicorn

    from gateway.app import create_app
    from gateway.workers import server_options

    uvicorn.run(create_app(settings, secrets), **server_options(settings))
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
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env = os.environ if environ is None else environ
    if args.command == "serve":
        return serve(args, env)
    return demo(args, env)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
