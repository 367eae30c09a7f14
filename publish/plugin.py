"""The Datasette plugin of the fundledger site (registered by publish.site).

Hooks act only on a Datasette built by :func:`publish.site.make_datasette`
(it carries a ``_fundledger`` config); any other instance in the same
process is left alone.
"""

from __future__ import annotations

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
    from .views import ROUTES

    return ROUTES


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


@hookimpl
def asgi_wrapper(datasette):
    """The outermost layer: the site only reads, so any method but GET and
    HEAD is refused before Datasette sees it (405; OPTIONS, a CORS
    preflight, gets 204 with the CORS headers)."""
    if not _ours(datasette):
        return None

    def wrap(app):
        async def read_only(scope, receive, send):
            if scope["type"] != "http" or scope["method"] in _READ_METHODS:
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
