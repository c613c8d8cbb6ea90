"""``python -m ipa_tasks.health_check [URL]``: exit 0 when URL answers 2xx, else 1 with the reason.

The container health check of every service the image runs (Dockerfile ``HEALTHCHECK``, the Compose
file's ``healthcheck``): the image has no curl, and ``ipa`` itself takes over a second to import. This
module imports only the standard library. The URL defaults to ``$IPA_HEALTH_URL``, else the stage
server's liveness endpoint, ``http://127.0.0.1:$IPA_PORT/healthz`` (port 8000 when unset).
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

DEFAULT_PORT = "8000"


def default_url(environ: Mapping[str, str] = os.environ) -> str:
    port = environ.get("IPA_PORT", DEFAULT_PORT)
    return environ.get("IPA_HEALTH_URL") or f"http://127.0.0.1:{port}/healthz"


def check(url: str, timeout_s: float) -> str | None:
    """None when ``url`` answers 2xx within ``timeout_s``; else why not, in words."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        return f"{url} answered {exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{url} did not answer: {reason}"
    return None if 200 <= status < 300 else f"{url} answered {status}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ipa_tasks.health_check",
        description="Exit 0 when URL answers with a 2xx status, else 1 and say why (container health "
        "checks).",
    )
    parser.add_argument(
        "url", nargs="?", default=None, help="default: $IPA_HEALTH_URL, else the stage server's /healthz"
    )
    parser.add_argument("--timeout-s", type=float, default=4.0, help="give up after this long (default 4)")
    args = parser.parse_args(argv)
    url = args.url or default_url()
    problem = check(url, args.timeout_s)
    if problem is not None:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
