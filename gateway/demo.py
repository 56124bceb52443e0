"""``gateway demo``: the gateway, the simulated resellers and an embedded Redis in one process.

The demo reads the real ``config.yaml`` and changes only what must change to run offline:
provider base URLs point at the simulated resellers, whose keys are the sandbox's own, the
client key defaults to a demo value, and finished videos may be copied from the resellers'
loopback addresses (``storage.allow_private_sources``). Then it prints curl commands that work
as pasted.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Mapping
from pathlib import Path

import uvicorn

from gateway.app import create_app
from gateway.config import ConfigError, Settings, load_settings, resolve_secrets
from gateway.logs import configure_logging
from providers.sandbox.server import Sandbox, SandboxConfig

DEMO_CLIENT_KEY = "demo-client-key"
SAMPLE_BODY = (
    '{"prompt": "a paper boat drifting down a rainy street", "duration": 6, "resolution": "768P"}'
)
"""Text-to-video: no image (the simulated MiniMax serves it)."""
IMAGE_BODY = (
    '{"prompt": "the boat turns and sails away", "model": "hailuo-2.3-fast", '
    '"image": "https://example.com/first-frame.png"}'
)
"""Image-to-video with Hailuo 2.3 Fast."""


def _demo_settings(settings: Settings, sandbox: Sandbox, host: str, port: int) -> Settings:
    urls = {kind: server.url for kind, server in sandbox.servers.items()}
    providers = {
        name: cfg.model_copy(update={"base_url": urls[cfg.kind], "enabled": True})
        for name, cfg in settings.providers.items()
        if cfg.kind in urls
    }
    return settings.model_copy(
        update={
            "providers": providers,
            "server": settings.server.model_copy(update={"host": host, "port": port}),
            "storage": settings.storage.model_copy(update={"allow_private_sources": True}),
        }
    )


def _demo_environ(
    settings: Settings, sandbox: Sandbox, environ: Mapping[str, str]
) -> dict[str, str]:
    env = dict(environ)
    keys = {
        "runapi": sandbox.config.runapi_key,
        "apiinone": sandbox.config.apiinone_key,
        "minimax": sandbox.config.minimax_key,
        "fal": sandbox.config.fal_key,
    }
    for cfg in settings.providers.values():
        env[cfg.api_key_env] = keys[cfg.kind]
    for client in settings.auth.keys:
        env.setdefault(client.key_env, DEMO_CLIENT_KEY)
    return env


def usage(base: str, key: str) -> str:
    auth = shlex.quote(f"Authorization: Bearer {key}")
    return "\n".join(
        [
            "",
            f"Hailuo gateway demo: {base}  (simulated resellers, embedded Redis; Ctrl-C stops)",
            "",
            "Create a video from a prompt (text-to-video), keeping its id:",
            _create_command(base, auth, SAMPLE_BODY),
            "",
            "Or animate a first frame with Hailuo 2.3 Fast (image-to-video):",
            _create_command(base, auth, IMAGE_BODY),
            "",
            "Read it (completed after about 3 seconds, once the video is copied):",
            f"  curl -s {base}/v1/videos/$ID -H {auth}",
            "",
            "Download the stored video (served by the gateway, not the reseller):",
            f"  curl -s {base}/v1/videos/$ID/content -H {auth} -o video.mp4 && ls -l video.mp4",
            "",
            "This key's spend, reservations and budget today (period=month for the month):",
            f"  curl -s {base}/v1/usage -H {auth}",
            "",
            f"OpenAPI: {base}/schema/openapi.json",
            "",
        ]
    )


def _create_command(base: str, auth: str, body: str) -> str:
    return (
        f"  ID=$(curl -s -X POST {base}/v1/videos -H {auth} "
        f"-H 'Content-Type: application/json' -d {shlex.quote(body)} "
        "| python3 -c 'import json,sys; t=json.load(sys.stdin); print(t[\"id\"])'); echo $ID"
    )


async def _run(config_path: Path, host: str, port: int, environ: Mapping[str, str]) -> int:
    async with Sandbox(SandboxConfig()) as sandbox:
        try:
            base_settings = load_settings(config_path, environ)
            settings = _demo_settings(base_settings, sandbox, host, port)
            env = _demo_environ(settings, sandbox, environ)
            secrets = resolve_secrets(settings, env)
        except ConfigError as exc:
            print(f"gateway demo: {exc}")
            return 2
        configure_logging("WARNING" if settings.log.level == "INFO" else settings.log.level)
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(settings, secrets),
                host=host,
                port=port,
                log_config=None,
                access_log=False,
                lifespan="on",
            )
        )
        serving = asyncio.create_task(server.serve())
        while not server.started and not serving.done():  # noqa: ASYNC110 - uvicorn has no event
            await asyncio.sleep(0.05)
        if server.started:
            client_key = env[settings.auth.keys[0].key_env]
            print(usage(f"http://{host}:{port}", client_key), flush=True)
        await serving
    return 0 if server.started else 1


def run_demo(*, config_path: Path, host: str, port: int, environ: Mapping[str, str]) -> int:
    try:
        return asyncio.run(_run(config_path, host, port, environ))
    except KeyboardInterrupt:  # Ctrl-C is how a demo ends; everything was stopped on the way out
        return 0
