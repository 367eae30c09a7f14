"""The heads tree and its content-addressed tiles (docs/FORMAT.md, "Format 2").

Roots are checked against the RFC 6962 known answers in
tests/vectors/rfc6962-roots.json and against a recursive MTH written from
RFC 6962 section 2.1 here; tiles are checked by walking every fund's path
and by tampering with what a hostile server would hand over.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest

from ledger.errors import FormatError, ProofError
from ledger.tlog import merkle
from ledger.tlog.heads import (
    HEADS_TILE_WIDTH,
    HeadsTree,
    head_from_tiles,
    heads_height,
    heads_root,
    heads_tiles,
    tile_path,
)

VECTORS = Path(__file__).resolve().parent / "vectors"


def mth(hashes: list[bytes]) -> bytes:
    """RFC 6962 section 2.1, written out recursively over subtree hashes."""
    if not hashes:
        return hashlib.sha256(b"").digest()
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return hashlib.sha256(b"\x01" + mth(hashes[:k]) + mth(hashes[k:])).digest()


def lines(count: int, seed: int = 0) -> list[bytes]:
    rnd = random.Random(seed)
    return [
        (f'{{"balance":"{rnd.randrange(10**9)}.00","contract":"C{i}","entries":{rnd.randrange(1, 99)},'
         f'"hash":"x","seq":{i}}}\n').encode()
        for i in range(count)
    ]


def test_root_matches_the_rfc6962_known_answers():
    data = json.loads((VECTORS / "rfc6962-roots.json").read_text())
    leaves = [merkle.leaf_hash(bytes.fromhex(x)) for x in data["leaves"]]
    for n, root in enumerate(data["roots"]):
        assert HeadsTree(leaves[:n]).root().hex() == root


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 8, 13, 64, 100])
def test_set_keeps_the_root_equal_to_a_rebuild(n):
    rnd = random.Random(n)
    leaves = [merkle.leaf_hash(bytes([i % 256, i // 256])) for i in range(n)]
    tree = HeadsTree(leaves)
    for _ in range(3 * n):
        i = rnd.randrange(n)
        leaves[i] = merkle.leaf_hash(rnd.randbytes(8))
        tree.set(i, leaves[i])
        assert tree.root() == mth(leaves)
    copy = tree.copy()
    if n:
        copy.set(0, merkle.leaf_hash(b"other"))
        assert tree.root() == mth(leaves) != copy.root()
    assert tree.leaves() == leaves and len(tree) == n


def test_appends_after_sets():
    tree, leaves = HeadsTree(), []
    for i in range(40):
        leaves.append(merkle.leaf_hash(str(i).encode()))
        tree.append(leaves[-1])
        j = i // 2
        leaves[j] = merkle.leaf_hash(b"moved %d" % i)
        tree.set(j, leaves[j])
        assert tree.root() == mth(leaves)


def test_a_tile_with_one_child_is_kept_apart_from_it():
    heads = lines(257)  # level 1 holds two names; at 65537 the second has one child
    tiles = heads_tiles(lines(65537))
    lone = heads_root(lines(65537)[65536:])
    assert tiles[tile_path(0, lone)] == lines(65537)[65536]
    assert tiles[tile_path(1, lone)] == lone
    assert len(heads_tiles(heads)) == 3


@pytest.mark.parametrize("count,height", [(0, 0), (1, 0), (256, 0), (257, 1), (65536, 1), (65537, 2)])
def test_height(count, height):
    assert heads_height(count) == height


@pytest.mark.parametrize("count", [0, 1, 255, 256, 257, 513, 256 * 256 + 3])
def test_every_head_is_read_back_from_tiles(count):
    heads = lines(count)
    root = heads_root(heads)
    assert root == mth([merkle.leaf_hash(x) for x in heads])
    tiles = heads_tiles(heads)
    assert tile_path(heads_height(count), root) in tiles  # the top tile is named by the root
    for name, data in tiles.items():
        assert len(data) <= HEADS_TILE_WIDTH * 1024
    fetched = []

    def fetch(name):
        fetched.append(name)
        return tiles[name]

    picks = range(count) if count <= 600 else [0, 255, 256, count // 2, count - 1]
    for i in picks:
        fetched.clear()
        assert head_from_tiles(root, count, i, fetch) == heads[i]
        assert len(fetched) == heads_height(count) + 1


def test_a_tampered_tile_is_refused():
    heads = lines(300)
    root = heads_root(heads)
    tiles = heads_tiles(heads)
    leaf_tile = next(n for n, d in tiles.items() if d.startswith(heads[0]))
    assert leaf_tile.startswith("0/")
    for bad in (
        tiles[leaf_tile].replace(b'"seq":0}', b'"seq":9}'),  # one head changed
        tiles[leaf_tile][: -len(heads[255])],  # a head dropped
        tiles[leaf_tile] + heads[256],  # a head added
        tiles[leaf_tile][:-1],  # no final newline
        b"x" * (HEADS_TILE_WIDTH * 1024 + 1),  # over the limit
    ):
        forged = dict(tiles, **{leaf_tile: bad})
        with pytest.raises(ProofError):
            head_from_tiles(root, 300, 3, forged.__getitem__)
    top = dict(tiles, **{tile_path(1, root): tiles[tile_path(1, root)][:32]})
    with pytest.raises(ProofError):
        head_from_tiles(root, 300, 3, top.__getitem__)


def test_a_count_or_index_that_moves_the_head_is_refused():
    heads = lines(300)
    root, tiles = heads_root(heads), heads_tiles(heads)
    with pytest.raises(FormatError):
        head_from_tiles(root, 300, 300, tiles.__getitem__)
    with pytest.raises(FormatError):
        head_from_tiles(root, 300, -1, tiles.__getitem__)
    # the same tiles claimed for another count: the last fund's tile has another size
    def fetch(path):
        if path not in tiles:
            raise ProofError(f"no heads tile {path}")
        return tiles[path]

    for count in (299, 256, 301, 512):
        with pytest.raises(ProofError):
            head_from_tiles(root, count, count - 1, fetch)
