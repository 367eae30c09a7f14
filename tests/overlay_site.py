"""``python tests/overlay_site.py DB PORT DIR``: the site of DB on PORT, but
with the log's files (checkpoint, vkey, tiles, chains, heads, funds, since)
read from the export directory DIR: what a host serving the site's pages
beside a rewritten export would serve (tests/test_browser_return.py)."""

from __future__ import annotations

import os
import sys

import uvicorn

from publish.site import make_datasette

LOG_FILES = ("/checkpoint", "/vkey", "/since", "/funds")
LOG_DIRS = ("/tile/", "/chain/", "/heads/")


def overlay(app, root: str):
    async def serve(scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] == "http" and (path in LOG_FILES or path.startswith(LOG_DIRS)):
            file = os.path.realpath(os.path.join(root, path.lstrip("/")))
            ok = file.startswith(os.path.realpath(root) + os.sep) and os.path.isfile(file)
            body = open(file, "rb").read() if ok else b"not found"
            await send({"type": "http.response.start", "status": 200 if ok else 404,
                        "headers": [(b"content-type", b"application/octet-stream"), (b"cache-control", b"no-store")]})
            await send({"type": "http.response.body", "body": body})
            return
        await app(scope, receive, send)

    return serve


if __name__ == "__main__":
    db, port, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    uvicorn.run(overlay(make_datasette(db).app(), root), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
