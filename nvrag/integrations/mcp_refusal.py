"""When `nvrag mcp` cannot start, tell the agent why, in the protocol, not just on stderr.

An agent starts the server and sends ``initialize`` at once; a server that exits instead leaves the client
with "connection closed" and the reason only in a log few people find. Where stdin is a pipe (an agent, not a
terminal), the first request is read (for at most ``WAIT_S``) and answered with a JSON-RPC error carrying
nvrag's one line; the process then exits with its usual code. Stdlib only: it must work when the ``mcp``
package itself is what is missing.
"""

from __future__ import annotations

import json
import select
from typing import IO

WAIT_S = 10.0
MAX_REQUEST_BYTES = 1 << 20  # an initialize request is a few hundred bytes
INTERNAL_ERROR = -32603  # JSON-RPC 2.0: the server could not handle the request


def refuse_startup(message: str, stdin: IO[str], stdout: IO[str], wait_s: float = WAIT_S) -> bool:
    """Answer the client's first request with an error naming ``message``; whether an answer was written."""
    if stdin.isatty():
        return False
    try:
        ready, _, _ = select.select([stdin], [], [], wait_s)
    except (OSError, ValueError):  # not a selectable stream (a test's StringIO, a closed pipe)
        ready = [stdin]
    if not ready:
        return False
    line = stdin.readline(MAX_REQUEST_BYTES)
    try:
        request = json.loads(line)
    except ValueError:
        return False
    if not isinstance(request, dict) or "id" not in request:
        return False
    error = {"code": INTERNAL_ERROR, "message": f"nvrag mcp cannot start: {message}"}
    stdout.write(json.dumps({"jsonrpc": "2.0", "id": request["id"], "error": error}) + "\n")
    stdout.flush()
    return True
