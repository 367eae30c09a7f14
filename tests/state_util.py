"""Reading a verifier's ``--state`` file the way an auditor would (plain
sqlite3, no ledger code), and writing the JSON files older versions saved."""

from __future__ import annotations

import base64
import json
import sqlite3
import struct


def read_state(path) -> dict:
    """The state row's JSON, with its version and the id hashes (sorted)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        version, body = conn.execute("SELECT version, body FROM state").fetchone()
        ids = [h for (h,) in conn.execute("SELECT h FROM ids ORDER BY h")]
    finally:
        conn.close()
    return {**json.loads(body), "version": version, "ids": ids}


def legacy_json(path) -> dict:
    """The same state as version 3 saved it: one JSON object, the hashes
    packed as little-endian uint64 in base64."""
    st = read_state(path)
    ids = st.pop("ids")
    st.update(version=3, seen=base64.b64encode(struct.pack(f"<{len(ids)}Q", *ids)).decode())
    return st
