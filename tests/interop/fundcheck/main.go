// Command fundcheck checks a fundledger publication with Go's own
// golang.org/x/mod/sumdb/note and golang.org/x/mod/sumdb/tlog, the reference
// implementations that fundledger's formats must interoperate with.
//
// It is a test tool (see ../README.md and tests/test_interop_go.py): it
// prints one line per check, "ok ..." or "FAIL ...", and exits 1 if any
// check failed, 2 on bad usage.
//
//	fundcheck log -dir DIR [-vkey FILE] [-checkpoint FILE]
//	              [-receipt FILE]... [-consistency FILE -old FILE]
//	fundcheck keygen -name NAME -text FILE -out DIR
//	fundcheck open -vkey FILE NOTE...
//	fundcheck sign -skey FILE -text FILE
//
// log: verify the signed checkpoint, every entry bundle (each entry a signed
// note, seq and prev chain), the tree root recomputed from the entries, every
// hash tile (byte for byte, and through tlog.TileHashReader), the receipts
// (c2sp.org/tlog-proof@v1) and a consistency proof (c2sp.org/tlog-witness
// add-checkpoint body) against an old checkpoint.
//
// keygen: note.GenerateKey, then sign the text of FILE; writes DIR/skey,
// DIR/vkey and DIR/note. open: note.Open each NOTE with the vkey and print
// its text. sign: note.Sign the text with the skey and print the note.
package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const (
	tileHeight    = 8 // C2SP tlog-tiles: 256-wide tiles
	tileWidth     = 1 << tileHeight
	maxEntryBytes = 65535 // an entry bundle's uint16 length prefix
	receiptHeader = "c2sp.org/tlog-proof@v1"
)

var failures int

func ok(format string, args ...interface{}) {
	fmt.Printf("ok   "+format+"\n", args...)
}

func fail(format string, args ...interface{}) {
	failures++
	fmt.Printf("FAIL "+format+"\n", args...)
}

// fatal reports a failure after which nothing else can be checked.
func fatal(format string, args ...interface{}) {
	fail(format, args...)
	os.Exit(1)
}

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  fundcheck log -dir DIR [-vkey FILE] [-checkpoint FILE] [-receipt FILE]... [-consistency FILE -old FILE]
  fundcheck keygen -name NAME -text FILE -out DIR
  fundcheck open -vkey FILE NOTE...
  fundcheck sign -skey FILE -text FILE
`)
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "log":
		cmdLog(os.Args[2:])
	case "keygen":
		cmdKeygen(os.Args[2:])
	case "open":
		cmdOpen(os.Args[2:])
	case "sign":
		cmdSign(os.Args[2:])
	default:
		usage()
	}
	if failures > 0 {
		fmt.Printf("%d check(s) failed\n", failures)
		os.Exit(1)
	}
}

type fileList []string

func (f *fileList) String() string     { return strings.Join(*f, ",") }
func (f *fileList) Set(s string) error { *f = append(*f, s); return nil }

func parseFlags(fs *flag.FlagSet, args []string) {
	fs.Usage = usage
	if err := fs.Parse(args); err != nil {
		usage()
	}
}

func readFile(path string) []byte {
	data, err := os.ReadFile(path)
	if err != nil {
		fatal("read %s: %v", path, err)
	}
	return data
}

// readKey reads a one-line key file; one trailing newline is allowed.
func readKey(path string) string {
	return strings.TrimSuffix(string(readFile(path)), "\n")
}

// ---------------------------------------------------------------------------
// Checkpoints (c2sp.org/tlog-checkpoint), receipts, consistency proofs

type checkpoint struct {
	origin string
	size   int64
	root   tlog.Hash
}

// parseDecimal: ASCII decimal without leading zeros, below 2**63.
func parseDecimal(s, what string) (int64, error) {
	if s == "" || (len(s) > 1 && s[0] == '0') || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("%s %q is not a decimal number", what, s)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s %q: %v", what, s, err)
	}
	return n, nil
}

func parseHash(s, what string) (tlog.Hash, error) {
	var h tlog.Hash
	raw, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil || len(raw) != tlog.HashSize || base64.StdEncoding.EncodeToString(raw) != s {
		return h, fmt.Errorf("%s %q is not the base64 of a 32-byte hash", what, s)
	}
	copy(h[:], raw)
	return h, nil
}

// openCheckpoint verifies a signed checkpoint note with note.Open and
// parses its text: origin, size, base64 root, then extension lines.
func openCheckpoint(msg []byte, verifiers note.Verifiers, origin string) (checkpoint, error) {
	var cp checkpoint
	n, err := note.Open(msg, verifiers)
	if err != nil {
		return cp, fmt.Errorf("note.Open: %v", err)
	}
	lines := strings.Split(strings.TrimSuffix(n.Text, "\n"), "\n")
	if len(lines) < 3 {
		return cp, errors.New("checkpoint has fewer than three lines")
	}
	for _, l := range lines {
		if l == "" {
			return cp, errors.New("checkpoint has an empty line")
		}
	}
	cp.origin = lines[0]
	if cp.origin != origin {
		return cp, fmt.Errorf("checkpoint origin %q is not the key name %q", cp.origin, origin)
	}
	if cp.size, err = parseDecimal(lines[1], "tree size"); err != nil {
		return cp, err
	}
	if cp.root, err = parseHash(lines[2], "root hash"); err != nil {
		return cp, err
	}
	return cp, nil
}

// splitProof parses hash lines from lines[start] up to an empty line and
// returns them with the bytes after that empty line (a checkpoint note).
func splitProof(data []byte, lines []string, start int) ([]tlog.Hash, []byte, error) {
	offset := 0
	for _, l := range lines[:start] {
		offset += len(l) + 1
	}
	var hashes []tlog.Hash
	for i := start; ; i++ {
		if i >= len(lines)-1 {
			return nil, nil, errors.New("no empty line before the checkpoint")
		}
		offset += len(lines[i]) + 1
		if lines[i] == "" {
			break
		}
		if len(hashes) == 63 {
			return nil, nil, errors.New("more than 63 proof hashes")
		}
		h, err := parseHash(lines[i], "proof hash")
		if err != nil {
			return nil, nil, err
		}
		hashes = append(hashes, h)
	}
	return hashes, data[offset:], nil
}

type receipt struct {
	extra      []byte // nil if absent
	index      int64
	proof      tlog.RecordProof
	checkpoint []byte
}

// parseReceipt parses c2sp.org/tlog-proof@v1:
//
//	c2sp.org/tlog-proof@v1
//	extra <base64>     (optional)
//	index <n>
//	<base64 hash>...   (the inclusion proof)
//	                   (empty line)
//	<signed checkpoint note>
func parseReceipt(data []byte) (receipt, error) {
	var r receipt
	lines := strings.Split(string(data), "\n")
	if len(lines) < 2 || lines[0] != receiptHeader {
		return r, fmt.Errorf("first line is not %q", receiptHeader)
	}
	i := 1
	if strings.HasPrefix(lines[i], "extra ") {
		b64 := strings.TrimPrefix(lines[i], "extra ")
		extra, err := base64.StdEncoding.Strict().DecodeString(b64)
		if err != nil || len(extra) == 0 || base64.StdEncoding.EncodeToString(extra) != b64 {
			return r, errors.New("extra is not non-empty canonical base64")
		}
		r.extra = extra
		i++
	}
	if i >= len(lines)-1 || !strings.HasPrefix(lines[i], "index ") {
		return r, errors.New("no index line")
	}
	var err error
	if r.index, err = parseDecimal(strings.TrimPrefix(lines[i], "index "), "index"); err != nil {
		return r, err
	}
	var hashes []tlog.Hash
	hashes, r.checkpoint, err = splitProof(data, lines, i+1)
	r.proof = tlog.RecordProof(hashes)
	return r, err
}

type consistencyProof struct {
	oldSize    int64
	proof      tlog.TreeProof
	checkpoint []byte
}

// parseConsistency parses a c2sp.org/tlog-witness add-checkpoint body:
// "old <n>", base64 proof hashes, an empty line, the new checkpoint note.
func parseConsistency(data []byte) (consistencyProof, error) {
	var c consistencyProof
	lines := strings.Split(string(data), "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[0], "old ") {
		return c, errors.New("first line is not \"old <size>\"")
	}
	var err error
	if c.oldSize, err = parseDecimal(strings.TrimPrefix(lines[0], "old "), "old size"); err != nil {
		return c, err
	}
	var hashes []tlog.Hash
	hashes, c.checkpoint, err = splitProof(data, lines, 1)
	c.proof = tlog.TreeProof(hashes)
	return c, err
}

// ---------------------------------------------------------------------------
// Tiles: x/mod paths carry the height ("tile/8/L/NNN"), C2SP's do not
// ("tile/L/NNN"); entry bundles are "tile/entries/NNN" (x/mod: "tile/8/data/NNN").

func c2spPath(t tlog.Tile) string {
	p := t.Path()
	prefix := fmt.Sprintf("tile/%d/", t.H)
	if !strings.HasPrefix(p, prefix) {
		panic("unexpected x/mod tile path " + p)
	}
	rest := strings.TrimPrefix(p, prefix)
	if t.L == -1 {
		return "tile/entries/" + strings.TrimPrefix(rest, "data/")
	}
	return "tile/" + rest
}

// publishedTiles lists the tiles a tree of size n publishes at one level
// (-1: entry bundles, whose count is that of level 0): full tiles, then the
// partial right-edge tile if any.
func publishedTiles(level int, n int64) []tlog.Tile {
	l := level
	if l < 0 {
		l = 0
	}
	count := n >> uint(tileHeight*l)
	var tiles []tlog.Tile
	for i := int64(0); i < count/tileWidth; i++ {
		tiles = append(tiles, tlog.Tile{H: tileHeight, L: level, N: i, W: tileWidth})
	}
	if w := count % tileWidth; w != 0 {
		tiles = append(tiles, tlog.Tile{H: tileHeight, L: level, N: count / tileWidth, W: int(w)})
	}
	return tiles
}

// dirTiles is a tlog.TileReader over the C2SP tiles in a directory.
type dirTiles struct {
	dir  string
	read map[string]bool
}

func (d *dirTiles) Height() int { return tileHeight }

func (d *dirTiles) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		p := c2spPath(t)
		data, err := os.ReadFile(filepath.Join(d.dir, filepath.FromSlash(p)))
		if err != nil {
			return nil, err
		}
		d.read[p] = true
		out[i] = data
	}
	return out, nil
}

func (d *dirTiles) SaveTiles(tiles []tlog.Tile, data [][]byte) {}

// memHashes is a tlog.HashReader over hashes computed here with tlog.StoredHashes.
type memHashes []tlog.Hash

func (m memHashes) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(m)) {
			return nil, fmt.Errorf("stored hash %d not computed", x)
		}
		out[i] = m[x]
	}
	return out, nil
}

// treeHash is tlog.TreeHash, except that the empty tree's hash is SHA-256("")
// (RFC 6962), where x/mod 0.7.0 returns zeros.
func treeHash(n int64, r tlog.HashReader) (tlog.Hash, error) {
	if n == 0 {
		return tlog.Hash(sha256.Sum256(nil)), nil
	}
	return tlog.TreeHash(n, r)
}

// ---------------------------------------------------------------------------
// fundcheck log

type entryJSON struct {
	Seq      *json.Number `json:"seq"`
	Prev     *string      `json:"prev"`
	Time     *string      `json:"time"`
	Kind     *string      `json:"kind"`
	Contract *string      `json:"contract"`
}

// checkEntry opens one entry as a signed note and checks its required fields.
func checkEntry(e []byte, seq int64, prev tlog.Hash, verifiers note.Verifiers) error {
	if len(e) > maxEntryBytes {
		return fmt.Errorf("entry is %d bytes", len(e))
	}
	n, err := note.Open(e, verifiers)
	if err != nil {
		return fmt.Errorf("note.Open: %v", err)
	}
	text := n.Text
	if strings.Count(text, "\n") != 1 || !strings.HasSuffix(text, "\n") {
		return errors.New("entry text is not one line")
	}
	var obj entryJSON
	dec := json.NewDecoder(strings.NewReader(text))
	dec.UseNumber()
	if err := dec.Decode(&obj); err != nil {
		return fmt.Errorf("entry text is not a JSON object: %v", err)
	}
	if obj.Seq == nil || obj.Prev == nil || obj.Time == nil || obj.Kind == nil || obj.Contract == nil {
		return errors.New("entry lacks one of seq, prev, time, kind, contract")
	}
	if obj.Seq.String() != strconv.FormatInt(seq, 10) {
		return fmt.Errorf("seq %s at leaf index %d", obj.Seq.String(), seq)
	}
	if want := base64.StdEncoding.EncodeToString(prev[:]); *obj.Prev != want {
		return fmt.Errorf("prev %s, want RecordHash of the previous entry %s", *obj.Prev, want)
	}
	return nil
}

// readBundle splits an entry bundle: big-endian uint16 length, entry bytes.
func readBundle(data []byte, width int) ([][]byte, error) {
	var out [][]byte
	for len(data) > 0 {
		if len(data) < 2 {
			return nil, errors.New("truncated length prefix")
		}
		n := int(binary.BigEndian.Uint16(data))
		if len(data) < 2+n {
			return nil, errors.New("truncated entry")
		}
		out = append(out, data[2:2+n])
		data = data[2+n:]
	}
	if len(out) != width {
		return nil, fmt.Errorf("%d entries, want %d", len(out), width)
	}
	return out, nil
}

func cmdLog(args []string) {
	fs := flag.NewFlagSet("log", flag.ContinueOnError)
	dir := fs.String("dir", "", "export directory (C2SP tlog-tiles)")
	vkeyPath := fs.String("vkey", "", "verifier key file [default: DIR/vkey]")
	cpPath := fs.String("checkpoint", "", "signed checkpoint to check the directory at [default: DIR/checkpoint]")
	consPath := fs.String("consistency", "", "consistency proof (add-checkpoint body)")
	oldPath := fs.String("old", "", "the old checkpoint of the consistency proof")
	var receipts fileList
	fs.Var(&receipts, "receipt", "receipt (c2sp.org/tlog-proof@v1) to check; repeatable")
	parseFlags(fs, args)
	if *dir == "" || fs.NArg() != 0 || (*consPath == "") != (*oldPath == "") {
		usage()
	}
	if *vkeyPath == "" {
		*vkeyPath = filepath.Join(*dir, "vkey")
	}
	if *cpPath == "" {
		*cpPath = filepath.Join(*dir, "checkpoint")
	}

	// The verifier key.
	vkey := readKey(*vkeyPath)
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		fatal("vkey %s: note.NewVerifier: %v", *vkeyPath, err)
	}
	verifiers := note.VerifierList(verifier)
	origin := verifier.Name()
	ok("vkey: note.NewVerifier accepts %s (key hash %08x)", vkey, verifier.KeyHash())

	// The checkpoint.
	cp, err := openCheckpoint(readFile(*cpPath), verifiers, origin)
	if err != nil {
		fatal("checkpoint %s: %v", *cpPath, err)
	}
	ok("checkpoint: note.Open verifies the signature by %s; origin %s, size %d, root %s",
		origin, cp.origin, cp.size, cp.root)
	tree := tlog.Tree{N: cp.size, Hash: cp.root}

	// Entry bundles, each entry a signed note in the hash chain; the stored
	// hashes recomputed from them with tlog.StoredHashes.
	var entries [][]byte
	var stored memHashes
	prev := tlog.Hash{}
	for _, t := range publishedTiles(-1, cp.size) {
		p := c2spPath(t)
		data, err := os.ReadFile(filepath.Join(*dir, filepath.FromSlash(p)))
		if err != nil {
			fatal("%s: %v", p, err)
		}
		bundle, err := readBundle(data, t.W)
		if err != nil {
			fatal("%s: %v", p, err)
		}
		bad := 0
		for _, e := range bundle {
			seq := int64(len(entries))
			if err := checkEntry(e, seq, prev, verifiers); err != nil {
				fail("%s: entry %d: %v", p, seq, err)
				bad++
			}
			hs, err := tlog.StoredHashes(seq, e, stored)
			if err != nil {
				fatal("tlog.StoredHashes(%d): %v", seq, err)
			}
			stored = append(stored, hs...)
			entries = append(entries, e)
			prev = tlog.RecordHash(e)
		}
		if bad == 0 {
			ok("%s: %d entries, each a note signed by %s (note.Open), seq = leaf index, prev = tlog.RecordHash of the previous entry",
				p, len(bundle), origin)
		}
	}

	// The root recomputed from the entries.
	root, err := treeHash(cp.size, stored)
	switch {
	case err != nil:
		fail("tree: tlog.TreeHash: %v", err)
	case root != cp.root:
		fail("tree: the root of the %d entries is %s, the checkpoint says %s", cp.size, root, cp.root)
	default:
		ok("tree: tlog.RecordHash/StoredHashes/TreeHash over the %d entries give the checkpoint root", cp.size)
	}

	// Every hash tile, byte for byte against the hashes of the entries.
	for level := 0; cp.size>>uint(tileHeight*level) > 0; level++ {
		for _, t := range publishedTiles(level, cp.size) {
			p := c2spPath(t)
			data, err := os.ReadFile(filepath.Join(*dir, filepath.FromSlash(p)))
			if err != nil {
				fail("%s: %v", p, err)
				continue
			}
			want, err := tlog.ReadTileData(t, stored)
			if err != nil {
				fatal("tlog.ReadTileData(%s): %v", t.Path(), err)
			}
			if !bytes.Equal(data, want) {
				fail("%s: differs from tlog.ReadTileData(%s) over the entries", p, t.Path())
				continue
			}
			ok("%s: equals tlog.ReadTileData(%s) over the entries (%d hashes)", p, t.Path(), t.W)
		}
	}

	// The tiles alone, as a reader without the entries sees them. First
	// through tlog.TileHashReader, which authenticates the tiles against the
	// checkpoint: the tree hash and every leaf hash.
	tiles := &dirTiles{dir: *dir, read: map[string]bool{}}
	thr := tlog.TileHashReader(tree, tiles)
	if th, err := treeHash(cp.size, thr); err != nil {
		fail("tiles: tlog.TreeHash through tlog.TileHashReader: %v", err)
	} else if th != cp.root {
		fail("tiles: tlog.TreeHash through tlog.TileHashReader is %s, not the checkpoint root", th)
	} else {
		ok("tiles: tlog.TreeHash through tlog.TileHashReader gives the checkpoint root")
	}
	if cp.size > 0 {
		idx := make([]int64, cp.size)
		for i := range idx {
			idx[i] = tlog.StoredHashIndex(0, int64(i))
		}
		leaves, err := thr.ReadHashes(idx)
		if err != nil {
			fail("tiles: tlog.TileHashReader reading all %d leaf hashes: %v", cp.size, err)
		} else {
			bad := 0
			for i, h := range leaves {
				if h != tlog.RecordHash(entries[i]) {
					if bad == 0 {
						// x/mod before v0.40.0 leaves some full tiles
						// unauthenticated (go.dev/issue/80744).
						fail("tiles: tlog.TileHashReader returned leaf hash %d without error, but it is not tlog.RecordHash of entry %d", i, i)
					}
					bad++
				}
			}
			if bad == 0 {
				ok("tiles: all %d leaf hashes read through tlog.TileHashReader (%d tiles read) equal tlog.RecordHash of the entries",
					cp.size, len(tiles.read))
			}
		}
	}
	// Then every full tile against its parent, as x/mod v0.40.0 does
	// (go.dev/issue/80744): the right-edge tiles are authenticated by the
	// tree hash above, every full tile (L, N) hashes to entry N%256 of tile
	// (L+1, N/256).
	checkTileParents(*dir, cp.size)

	// Receipts.
	for _, path := range receipts {
		checkReceipt(path, readFile(path), verifiers, origin, cp, entries, stored, thr)
	}

	// Consistency proof.
	if *consPath != "" {
		checkConsistency(*consPath, readFile(*consPath), *oldPath, readFile(*oldPath), verifiers, origin, cp, stored, thr)
	}
}

// checkTileParents checks that each full hash tile (L, N) of the tree of size
// n, hashed as a 256-leaf subtree with tlog.NodeHash, is hash N%256 of its
// parent tile (L+1, N/256) at that tile's published width.
func checkTileParents(dir string, n int64) {
	full, before := 0, failures
	for level := 0; n>>uint(tileHeight*level) > 0; level++ {
		for _, t := range publishedTiles(level, n) {
			if t.W != tileWidth {
				continue
			}
			full++
			parent := tlog.Tile{H: tileHeight, L: level + 1, N: t.N / tileWidth}
			parent.W = int(min64(tileWidth, (n>>uint(tileHeight*(level+1)))-parent.N*tileWidth))
			data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(c2spPath(t))))
			if err != nil || len(data) != tileWidth*tlog.HashSize {
				fail("tiles: %s is missing or not %d bytes", c2spPath(t), tileWidth*tlog.HashSize)
				continue
			}
			pdata, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(c2spPath(parent))))
			if err != nil || len(pdata) != parent.W*tlog.HashSize {
				fail("tiles: parent %s of %s is missing or not %d bytes", c2spPath(parent), c2spPath(t), parent.W*tlog.HashSize)
				continue
			}
			want, err := tlog.HashFromTile(parent, pdata, tlog.StoredHashIndex(parent.L*parent.H, t.N))
			if err != nil {
				fatal("tlog.HashFromTile(%s): %v", parent.Path(), err)
			}
			if subtreeRoot(data) != want {
				fail("tiles: %s does not hash to its hash in its parent %s", c2spPath(t), c2spPath(parent))
			}
		}
	}
	if failures == before {
		ok("tiles: each of the %d full tiles hashes (tlog.NodeHash) to its hash in its parent tile", full)
	}
}

// subtreeRoot is the root of a complete subtree whose 2**k hashes are data.
func subtreeRoot(data []byte) tlog.Hash {
	level := make([]tlog.Hash, len(data)/tlog.HashSize)
	for i := range level {
		copy(level[i][:], data[i*tlog.HashSize:])
	}
	for len(level) > 1 {
		next := make([]tlog.Hash, len(level)/2)
		for i := range next {
			next[i] = tlog.NodeHash(level[2*i], level[2*i+1])
		}
		level = next
	}
	return level[0]
}

func min64(a, b int64) int64 {
	if a < b {
		return a
	}
	return b
}

// rootAt is the root of the first n entries as recomputed here, if known.
func rootAt(n int64, cp checkpoint, stored memHashes) (tlog.Hash, bool) {
	if n > cp.size {
		return tlog.Hash{}, false
	}
	h, err := treeHash(n, stored)
	return h, err == nil
}

func checkReceipt(path string, data []byte, verifiers note.Verifiers, origin string, cp checkpoint,
	entries [][]byte, stored memHashes, thr tlog.HashReader) {
	name := "receipt " + filepath.Base(path)
	r, err := parseReceipt(data)
	if err != nil {
		fail("%s: %v", name, err)
		return
	}
	rcp, err := openCheckpoint(r.checkpoint, verifiers, origin)
	if err != nil {
		fail("%s: checkpoint: %v", name, err)
		return
	}
	if r.index >= rcp.size {
		fail("%s: index %d is not below the tree size %d", name, r.index, rcp.size)
		return
	}
	leaf := r.extra
	if leaf == nil {
		if r.index >= int64(len(entries)) {
			fail("%s: no extra (entry) and entry %d is not in the directory", name, r.index)
			return
		}
		leaf = entries[r.index]
	}
	// The entry in extra is itself a signed note.
	if err := func() error {
		n, err := note.Open(leaf, verifiers)
		if err != nil {
			return fmt.Errorf("extra: note.Open: %v", err)
		}
		var obj entryJSON
		dec := json.NewDecoder(strings.NewReader(n.Text))
		dec.UseNumber()
		if err := dec.Decode(&obj); err != nil || obj.Seq == nil {
			return errors.New("extra: not a JSON entry with a seq")
		}
		if obj.Seq.String() != strconv.FormatInt(r.index, 10) {
			return fmt.Errorf("extra: entry seq %s is not the index %d", obj.Seq.String(), r.index)
		}
		return nil
	}(); err != nil {
		fail("%s: %v", name, err)
		return
	}
	if err := tlog.CheckRecord(r.proof, rcp.size, rcp.root, r.index, tlog.RecordHash(leaf)); err != nil {
		fail("%s: tlog.CheckRecord(index %d, size %d): %v", name, r.index, rcp.size, err)
		return
	}
	msg := fmt.Sprintf("%s: checkpoint signed (note.Open), entry %d signed (note.Open), tlog.CheckRecord(RecordHash(extra)) in the tree of size %d",
		name, r.index, rcp.size)
	// Cross-checks against the directory when it covers the receipt's tree.
	if h, known := rootAt(rcp.size, cp, stored); known {
		if h != rcp.root {
			fail("%s: its checkpoint root is not the root of the first %d entries of the directory", name, rcp.size)
			return
		}
		if !bytes.Equal(leaf, entries[r.index]) {
			fail("%s: extra is not entry %d of the directory", name, r.index)
			return
		}
		msg += "; same root and entry as the directory"
		// The proof is unique: x/mod must compute the same one, from the
		// entries' hashes and, at the directory's size, through the tiles.
		readers := map[string]tlog.HashReader{"the entries": stored}
		if rcp.size == cp.size {
			readers["the tiles"] = thr
		}
		for what, hr := range readers {
			want, err := tlog.ProveRecord(rcp.size, r.index, hr)
			if err != nil {
				fail("%s: tlog.ProveRecord over %s: %v", name, what, err)
				return
			}
			if !equalHashes(want, r.proof) {
				fail("%s: proof differs from tlog.ProveRecord over %s", name, what)
				return
			}
		}
		msg += "; proof = tlog.ProveRecord"
	}
	ok("%s", msg)
}

func checkConsistency(path string, data []byte, oldPath string, oldData []byte, verifiers note.Verifiers,
	origin string, cp checkpoint, stored memHashes, thr tlog.HashReader) {
	name := "consistency " + filepath.Base(path)
	old, err := openCheckpoint(oldData, verifiers, origin)
	if err != nil {
		fail("%s: old checkpoint %s: %v", name, filepath.Base(oldPath), err)
		return
	}
	c, err := parseConsistency(data)
	if err != nil {
		fail("%s: %v", name, err)
		return
	}
	ncp, err := openCheckpoint(c.checkpoint, verifiers, origin)
	if err != nil {
		fail("%s: new checkpoint: %v", name, err)
		return
	}
	if c.oldSize != old.size {
		fail("%s: old size %d is not the old checkpoint's size %d", name, c.oldSize, old.size)
		return
	}
	if old.size > ncp.size {
		fail("%s: old size %d is over the new size %d", name, old.size, ncp.size)
		return
	}
	if old.size == 0 || old.size == ncp.size {
		// tlog.CheckTree refuses n == 0; for n == t the proof is empty.
		if len(c.proof) != 0 || (old.size == ncp.size && old.root != ncp.root) {
			fail("%s: sizes %d and %d need an empty proof and, if equal, equal roots", name, old.size, ncp.size)
			return
		}
	} else if err := tlog.CheckTree(c.proof, ncp.size, ncp.root, old.size, old.root); err != nil {
		fail("%s: tlog.CheckTree(size %d -> %d): %v", name, old.size, ncp.size, err)
		return
	}
	msg := fmt.Sprintf("%s: old and new checkpoints signed (note.Open), tlog.CheckTree proves size %d -> %d",
		name, old.size, ncp.size)
	if h, known := rootAt(ncp.size, cp, stored); known {
		if h != ncp.root {
			fail("%s: the new checkpoint's root is not the root of the first %d entries of the directory", name, ncp.size)
			return
		}
		msg += "; new root = the directory's"
		if old.size > 0 && old.size < ncp.size {
			readers := map[string]tlog.HashReader{"the entries": stored}
			if ncp.size == cp.size {
				readers["the tiles"] = thr
			}
			for what, hr := range readers {
				want, err := tlog.ProveTree(ncp.size, old.size, hr)
				if err != nil {
					fail("%s: tlog.ProveTree over %s: %v", name, what, err)
					return
				}
				if !equalHashes(want, c.proof) {
					fail("%s: proof differs from tlog.ProveTree over %s", name, what)
					return
				}
			}
			msg += "; proof = tlog.ProveTree"
		}
	}
	ok("%s", msg)
}

func equalHashes(a, b []tlog.Hash) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// ---------------------------------------------------------------------------
// Keys and notes the other way round: Go's keys and signatures for Python.

func cmdKeygen(args []string) {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	name := fs.String("name", "", "key name")
	textPath := fs.String("text", "", "note text to sign")
	out := fs.String("out", "", "output directory")
	parseFlags(fs, args)
	if *name == "" || *textPath == "" || *out == "" || fs.NArg() != 0 {
		usage()
	}
	skey, vkey, err := note.GenerateKey(rand.Reader, *name)
	if err != nil {
		fatal("note.GenerateKey: %v", err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		fatal("note.NewSigner: %v", err)
	}
	msg, err := note.Sign(&note.Note{Text: string(readFile(*textPath))}, signer)
	if err != nil {
		fatal("note.Sign: %v", err)
	}
	for file, data := range map[string]string{"skey": skey + "\n", "vkey": vkey + "\n", "note": string(msg)} {
		if err := os.WriteFile(filepath.Join(*out, file), []byte(data), 0o600); err != nil {
			fatal("write %s: %v", file, err)
		}
	}
	ok("keygen: note.GenerateKey %s; note signed with note.Sign", vkey)
}

func cmdOpen(args []string) {
	fs := flag.NewFlagSet("open", flag.ContinueOnError)
	vkeyPath := fs.String("vkey", "", "verifier key file")
	parseFlags(fs, args)
	if *vkeyPath == "" || fs.NArg() == 0 {
		usage()
	}
	v, err := note.NewVerifier(readKey(*vkeyPath))
	if err != nil {
		fatal("note.NewVerifier: %v", err)
	}
	for _, path := range fs.Args() {
		n, err := note.Open(readFile(path), note.VerifierList(v))
		if err != nil {
			fail("open %s: note.Open: %v", filepath.Base(path), err)
			continue
		}
		ok("open %s: note.Open verifies the signature by %s; text %q", filepath.Base(path), v.Name(), n.Text)
	}
}

func cmdSign(args []string) {
	fs := flag.NewFlagSet("sign", flag.ContinueOnError)
	skeyPath := fs.String("skey", "", "signer key file")
	textPath := fs.String("text", "", "note text to sign")
	parseFlags(fs, args)
	if *skeyPath == "" || *textPath == "" || fs.NArg() != 0 {
		usage()
	}
	s, err := note.NewSigner(readKey(*skeyPath))
	if err != nil {
		fatal("note.NewSigner: %v", err)
	}
	msg, err := note.Sign(&note.Note{Text: string(readFile(*textPath))}, s)
	if err != nil {
		fatal("note.Sign: %v", err)
	}
	os.Stdout.Write(msg)
}
