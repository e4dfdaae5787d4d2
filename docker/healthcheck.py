"""Container healthcheck for the app image: `python docker/healthcheck.py URL` exits 0 when URL
answers 200 (docker-compose.yml probes the web's and the worker's /readyz).

Python's standard library because the official python slim image has no curl.
"""

from __future__ import annotations

import sys
import urllib.request


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        with urllib.request.urlopen(argv[0], timeout=3) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:  # HTTPError (503 while not ready) included
        print(f"{argv[0]}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
