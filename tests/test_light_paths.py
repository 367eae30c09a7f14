"""Tile paths (docs/FORMAT.md, "Publication of chains and heads"): per
chain bundle, each entry's 8 siblings inside its level-0 tile, so that the
light check reads no level-0 hash tile for the entries in full tiles. They
must save bytes and never soundness: a wrong path is refused with the
entry's seq, a missing one only costs the tiles."""

from __future__ import annotations

import os
import shutil

import pytest
from test_light import contract, fill

from ledger.errors import VerificationError
from ledger.tlog import merkle
from ledger.tlog.tiles import PATH_BYTES, TILE_WIDTH, chain_paths_path, tile_path_indexes, tile_root_from_path
from ledger.verify.light import check_fund
from ledger.verify.sources import DirSource
from publish.export import export

SYMBOLS = ["AAA", "BBB", "CCC"]


@pytest.fixture
def out(ledger2):
    """A log of 904 entries (3 full tiles and a partial one), AAA in every third."""
    for s in SYMBOLS:
        ledger2.append(contract(s))
    fill(ledger2, SYMBOLS, 900)
    ledger2.checkpoint()
    path = str(ledger2.dir / "out")
    export(ledger2.store, path)
    return ledger2, path


def paths_files(root: str) -> list[str]:
    found = []
    for d, _, files in os.walk(os.path.join(root, "chain")):
        found += [os.path.relpath(os.path.join(d, f), root) for f in files if f.endswith(".paths")]
    return sorted(found)


class Counted(DirSource):
    def __init__(self, root):
        super().__init__(root)
        self.read: list[str] = []

    def fetch(self, path, limit):
        self.read.append(path)
        return super().fetch(path, limit)


def test_paths_are_published_only_for_entries_in_full_tiles(out):
    ledger2, root = out
    size = ledger2.store.size()
    full_tiles_end = size - size % TILE_WIDTH
    # AAA has 1 + 300 entries: bundle 0 (seqs up to ~770) is in full tiles, bundle 1 reaches the partial one
    assert chain_paths_path("AAA", 0, TILE_WIDTH) in paths_files(root)
    assert not [p for p in paths_files(root) if p.startswith("chain/AAA/001")]
    data = open(os.path.join(root, chain_paths_path("AAA", 0, TILE_WIDTH)), "rb").read()
    assert len(data) == TILE_WIDTH * PATH_BYTES
    seqs = [r[0] for r in ledger2.store.conn.execute("SELECT seq FROM entries WHERE contract = 'AAA' ORDER BY seq")]
    assert seqs[TILE_WIDTH - 1] < full_tiles_end <= seqs[-1]
    # each path leads from the leaf to its tile's stored root, as the ledger's tree says
    for i, seq in enumerate(seqs[:TILE_WIDTH]):
        leaf = ledger2.store.read_hashes([merkle.leaf_stored_index(seq)])[0]
        root_hash = tile_root_from_path(seq, leaf, data[i * PATH_BYTES:(i + 1) * PATH_BYTES])
        assert root_hash == ledger2.store.read_hashes([merkle.stored_hash_index(8, seq >> 8)])[0]
        assert data[i * PATH_BYTES:(i + 1) * PATH_BYTES] == b"".join(ledger2.store.read_hashes(tile_path_indexes(seq)))


def test_the_light_check_reads_no_level_0_tile_where_paths_serve(out):
    ledger2, root = out
    with_paths = Counted(root)
    r = check_fund(with_paths, None, "AAA")
    level0 = lambda src: {p for p in src.read if p.startswith("tile/0/")}  # noqa: E731
    for p in paths_files(root):
        os.unlink(os.path.join(root, p))
    without = Counted(root)
    r2 = check_fund(without, None, "AAA")
    assert r.fund == r2.fund and r.entries_checked == r2.entries_checked == 301
    assert level0(with_paths) < level0(without)
    # only the partial right-edge tile, and the tile of the first state entry (read alone, at `since`)
    size = ledger2.store.size()
    since = int(open(os.path.join(root, "since")).read())
    assert level0(with_paths) == {f"tile/0/003.p/{size % TILE_WIDTH}", f"tile/0/00{since // TILE_WIDTH}"}
    assert len(level0(without)) == 4


def test_the_site_serves_the_paths_the_export_writes(out, ledger2):
    import httpx
    from publish.site import BackgroundServer

    _, root = out
    files = paths_files(root)
    assert files
    with BackgroundServer(ledger2.db) as url:
        for rel in files:
            r = httpx.get(url.rstrip("/") + "/" + rel)
            assert r.status_code == 200 and r.content == open(os.path.join(root, rel), "rb").read(), rel
            assert "immutable" in r.headers["cache-control"]
        assert httpx.get(url.rstrip("/") + "/" + chain_paths_path("AAA", 1, 45)).status_code == 404


def test_an_incremental_export_writes_paths_when_a_tile_fills(ledger2):
    for s in SYMBOLS:
        ledger2.append(contract(s))
    fill(ledger2, ["AAA"], 20)  # AAA's 21 entries, all in the partial first tile
    ledger2.checkpoint()
    inc = str(ledger2.dir / "inc")
    export(ledger2.store, inc)
    assert paths_files(inc) == []
    fill(ledger2, ["BBB"], 300, start=100)  # only BBB grows; the first tile fills
    ledger2.checkpoint()
    export(ledger2.store, inc)
    assert chain_paths_path("AAA", 0, 21) in paths_files(inc)
    fresh = str(ledger2.dir / "fresh")
    export(ledger2.store, fresh)
    assert paths_files(inc) == paths_files(fresh)
    for rel in paths_files(fresh):
        assert open(os.path.join(inc, rel), "rb").read() == open(os.path.join(fresh, rel), "rb").read()


def tampered(root: str, edit) -> None:
    rel = chain_paths_path("AAA", 0, TILE_WIDTH)
    with open(os.path.join(root, rel), "rb") as f:
        data = bytearray(f.read())
    data = edit(data)
    with open(os.path.join(root, rel), "wb") as f:
        f.write(bytes(data))


def flip(at: int):
    def edit(data):
        data[at] ^= 1
        return data
    return edit


@pytest.mark.parametrize("edit, match", [
    (flip(0), "through chain/AAA/000.paths"),  # entry 0's level-0 sibling
    (flip(5 * PATH_BYTES + 7 * 32), "through chain/AAA/000.paths"),  # entry 5's top sibling
    (lambda d: d[PATH_BYTES:2 * PATH_BYTES] + d[:PATH_BYTES] + d[2 * PATH_BYTES:], "through"),  # two swapped
    (lambda d: d[:-1], "does not hold 256 tile paths"),
    (lambda d: d + b"\0" * 32, "larger|does not hold|more than"),
    (lambda d: b"", "does not hold 256 tile paths"),
])
def test_a_wrong_tile_path_is_refused(out, edit, match):
    ledger2, root = out
    tampered(root, edit)
    with pytest.raises(VerificationError, match=match):
        check_fund(DirSource(root), None, "AAA")


def test_a_wrong_path_names_the_seq_of_its_entry(out):
    ledger2, root = out
    tampered(root, flip(5 * PATH_BYTES + 100))
    seqs = [r[0] for r in ledger2.store.conn.execute("SELECT seq FROM entries WHERE contract = 'AAA' ORDER BY seq")]
    with pytest.raises(VerificationError) as e:
        check_fund(DirSource(root), None, "AAA")
    assert e.value.seq == seqs[5]


def test_a_path_made_for_a_forged_entry_cannot_match(out):
    """An operator who swaps an entry of the bundle for another signed one
    must also give a path to a tile root the tree holds: it cannot."""
    ledger2, root = out
    other = os.path.join(root, "other")
    shutil.copytree(root, other)
    rel = chain_paths_path("AAA", 0, TILE_WIDTH)
    bbb = open(os.path.join(root, chain_paths_path("BBB", 0, TILE_WIDTH)), "rb").read()
    open(os.path.join(other, rel), "wb").write(bbb)  # well-formed paths, of other leaves
    with pytest.raises(VerificationError, match="through"):
        check_fund(DirSource(other), None, "AAA")
