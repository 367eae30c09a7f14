"""The Datasette plugin of the fundledger site (registered by publish.site).

Hooks act only on a Datasette built by :func:`publish.site.make_datasette`
(it carries a ``_fundledger`` config); any other instance in the same
process is left alone.
"""

from __future__ import annotations

import json
from html import escape

from datasette import hookimpl
from markupsafe import Markup

from . import present


def _ours(datasette) -> bool:
    return getattr(datasette, "_fundledger", None) is not None


@hookimpl
def register_routes(datasette):
    if not _ours(datasette):
        return []
    from .adlviews import ADL_ROUTES
    from .views import ROUTES

    return ROUTES + ADL_ROUTES


@hookimpl
def render_cell(value, column, table, database, datasette):
    """In Datasette's table views, show a signed entry or checkpoint as its
    text and a hash as base64 rather than "<Binary: N bytes>"."""
    if not _ours(datasette) or database != datasette._fundledger.db_name or not isinstance(value, bytes):
        return None
    if (table, column) in (("entries", "data"), ("checkpoints", "note"), ("cosignatures", "line")):
        return Markup('<pre class="fl-note">{}</pre>'.format(escape(value.decode("utf-8", "replace"))))
    if (table, column) in (("entries", "leaf_hash"), ("checkpoints", "root")):
        return Markup("<code>{}</code>".format(escape(present.b64(value))))
    return None


@hookimpl
def menu_links(datasette, actor, request):
    if not _ours(datasette):
        return None
    return [
        {"href": "/", "label": "Insurance funds"},
        {"href": "/verify", "label": "Check it yourself"},
        {"href": "/about", "label": "How this works"},
    ]


_READ_METHODS = ("GET", "HEAD")
# Datasette's own pages: its inline scripts (menus) are blocked, its styles allowed.
DATASETTE_CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    b"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# Datasette pages the site answers itself: the database listing without
# the file's path, and no message form (it exists only to set a cookie).
_DATABASES = ("/-/databases", "/-/databases.json")
_GONE = ("/-/messages", "/-/messages.json")


def _headers_out(headers) -> list:
    """A response's headers as the site sends them: never a cookie (it has
    no session, no login, no form), and a Content-Security-Policy on any
    HTML page that lacks one (Datasette's own)."""
    out = [(k, v) for k, v in headers if k.lower() != b"set-cookie"]
    names = {k.lower() for k, _ in out}
    html = any(k.lower() == b"content-type" and v.lower().startswith(b"text/html") for k, v in out)
    if html and b"content-security-policy" not in names:
        out.append((b"content-security-policy", DATASETTE_CSP))
    return out


async def _send_plain(send, status: int, body: bytes, content_type: bytes) -> None:
    headers = [(b"content-type", content_type), (b"cache-control", b"no-store"),
               (b"x-content-type-options", b"nosniff")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _databases_json(datasette) -> bytes:
    """``/-/databases.json`` without the path and size of the file."""
    rows = [{"name": db.name, "route": db.route, "is_mutable": db.is_mutable, "is_memory": db.is_memory}
            for db in datasette.databases.values() if db.name != "_internal"]
    return (json.dumps(rows, indent=2) + "\n").encode()


@hookimpl
def asgi_wrapper(datasette):
    """The outermost layer: the site only reads, so any method but GET and
    HEAD is refused before Datasette sees it (405; OPTIONS, a CORS
    preflight, gets 204 with the CORS headers). It also strips every cookie,
    adds a Content-Security-Policy to Datasette's own pages, answers the
    database listing without the file's path and has no message form."""
    if not _ours(datasette):
        return None

    def wrap(app):
        async def read_only(scope, receive, send):
            if scope["type"] == "http" and scope["method"] in _READ_METHODS:
                path = scope.get("path", "")
                if path in _DATABASES:
                    return await _send_plain(send, 200, _databases_json(datasette), b"application/json; charset=utf-8")
                if path in _GONE:
                    return await _send_plain(send, 404, b"not found\n", b"text/plain; charset=utf-8")

                async def send_out(message):
                    if message["type"] == "http.response.start":
                        message = dict(message, headers=_headers_out(message.get("headers", [])))
                    await send(message)

                return await app(scope, receive, send_out)
            if scope["type"] != "http":
                return await app(scope, receive, send)
            preflight = scope["method"] == "OPTIONS"
            headers = [
                (b"allow", b"GET, HEAD, OPTIONS"),
                (b"access-control-allow-origin", b"*"),
                (b"access-control-allow-methods", b"GET, HEAD"),
                (b"access-control-max-age", b"86400"),
                (b"cache-control", b"no-store"),
            ]
            body = b"" if preflight else b"this site is read-only: only GET and HEAD\n"
            if body:
                headers.append((b"content-type", b"text/plain; charset=utf-8"))
            await send({"type": "http.response.start", "status": 204 if preflight else 405, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        return read_only

    return wrap
