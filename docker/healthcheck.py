#!/usr/bin/env python
"""The image's health check: the address the entrypoint wrote for the server it started answers 200 within 4 s.

`ui` writes its page's address, `serve` its /health (200 only once the model is loaded); with neither, the UI's.
"""

import os
import sys
import urllib.request

HEALTH_FILE = "/tmp/nvrag-health-url"


def main() -> int:
    try:
        with open(HEALTH_FILE, encoding="ascii") as f:
            url = f.read().strip()
    except OSError:
        url = f"http://127.0.0.1:{os.environ.get('NVRAG_PORT', '7860')}/"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            return 0 if response.status == 200 else 1
    except OSError as e:
        print(f"nvrag-healthcheck: {url}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
