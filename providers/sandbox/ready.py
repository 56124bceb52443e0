"""The one line ``python -m providers.sandbox`` prints on stdout once its servers listen::

    SANDBOX READY runapi=http://127.0.0.1:<port> apiinone=http://127.0.0.1:<port> minimax=… fal=…

Written by :class:`~providers.sandbox.server.Sandbox`, read by whoever started the process (the
tests, the benchmarks, the dashboard renderer) with :func:`parse_ready_line` (RunAPI's and API
in One's URLs) or :func:`parse_ready_urls` (every reseller's, by kind).
"""

from __future__ import annotations

PREFIX = "SANDBOX READY "


def format_line(runapi_url: str, apiinone_url: str, **more: str) -> str:
    """The READY line; ``more`` adds ``kind=url`` pairs for the other simulated resellers."""
    extra = "".join(f" {kind}={url}" for kind, url in more.items())
    return f"{PREFIX}runapi={runapi_url} apiinone={apiinone_url}{extra}"


def parse_ready_urls(line: str) -> dict[str, str] | None:
    """Every simulated reseller's URL by kind, or None when ``line`` is not the READY line."""
    if not line.startswith(PREFIX):
        return None
    urls = dict(part.split("=", 1) for part in line[len(PREFIX) :].split() if "=" in part)
    if "runapi" not in urls or "apiinone" not in urls:
        return None
    return urls


def parse_ready_line(line: str) -> tuple[str, str] | None:
    """``(runapi URL, apiinone URL)``, or None when ``line`` is not the READY line."""
    urls = parse_ready_urls(line)
    return None if urls is None else (urls["runapi"], urls["apiinone"])
