"""A real Prometheus server for the dashboard picture, on loopback, with a throwaway config
and data directory: it scrapes the gateway while the scripted run goes, and answers each
panel's PromQL through its HTTP API (``/api/v1/query_range``).

The server is the ``prometheus`` binary on ``PATH`` (Debian: ``apt-get install prometheus``;
the package's own service need not run).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

Series = tuple[dict[str, str], dict[float, float]]
"""One result series: its labels, and its value at each step's time."""


def substitute(expr: str, variables: dict[str, str]) -> str:
    """A dashboard query with Grafana's ``$name`` variables filled in, longest names first."""
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace(f"${name}", variables[name])
    return expr


class PrometheusMissing(RuntimeError):
    """No ``prometheus`` binary on ``PATH``."""


@dataclass(frozen=True)
class Prometheus:
    url: str

    def wait_scraping(self, timeout_s: float = 30.0) -> None:
        """Until the target has been scraped successfully (Prometheus applies a new config's
        targets a few seconds after start)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            targets = httpx.get(f"{self.url}/api/v1/targets", timeout=5).json()["data"]
            if any(t["health"] == "up" for t in targets["activeTargets"]):
                return
            time.sleep(0.2)
        raise RuntimeError("prometheus never scraped its target")

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        """``expr`` evaluated at ``start``, ``start + step``… up to ``end``."""
        answer = httpx.get(
            f"{self.url}/api/v1/query_range",
            params={"query": expr, "start": start, "end": end, "step": step},
            timeout=30,
        )
        body = answer.json()
        if answer.status_code != 200 or body.get("status") != "success":
            raise RuntimeError(f"{expr}: {body.get('error', answer.text)}")
        return [
            (dict(result["metric"]), {float(t): float(v) for t, v in result["values"]})
            for result in body["data"]["result"]
        ]


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited: {log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError("prometheus did not become ready")


@contextlib.contextmanager
def running(target: str, scrape_s: float, port: int) -> Iterator[Prometheus]:
    """A Prometheus on ``127.0.0.1:port`` scraping ``target`` (``host:port``) every
    ``scrape_s`` seconds, stopped and its data deleted at the end."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise PrometheusMissing(
            "no prometheus binary on PATH: the picture is drawn from a real Prometheus "
            "(Debian: apt-get install prometheus)"
        )
    interval = f"{round(scrape_s * 1000)}ms"
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [{"job_name": "gateway", "static_configs": [{"targets": [target]}]}],
    }
    with tempfile.TemporaryDirectory(prefix="gateway-prometheus-") as tmp:
        workdir = Path(tmp)
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        log = workdir / "prometheus.log"
        url = f"http://127.0.0.1:{port}"
        with log.open("wb") as out:
            process = subprocess.Popen(  # noqa: S603 - the binary on PATH, our arguments
                [
                    binary,
                    f"--config.file={workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=out,
                stderr=out,
                cwd=workdir,
            )
        try:
            _wait_ready(url, process, log)
            yield Prometheus(url)
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
