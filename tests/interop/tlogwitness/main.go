// Command tlogwitness is a second, independent implementation of both ends
// of c2sp.org/tlog-witness, on golang.org/x/mod/sumdb/note and sumdb/tlog
// and the standard library only, for tests/test_interop_witness_go.py (see
// ../README.md):
//
//	tlogwitness keygen -name NAME -out DIR
//	tlogwitness witness -name NAME -vkey-out FILE -log VKEYFILE... [-listen ADDR] [-lifetime D]
//	tlogwitness client -skey FILE -log-vkey FILE -witness URL -witness-vkey FILE < SCRIPT
//	tlogwitness open -log-vkey FILE -witness-vkey FILE NOTE
//
// keygen: note.GenerateKey (an Ed25519 log key); writes DIR/skey, DIR/vkey.
//
// open: note.Open of a cosigned checkpoint NOTE knowing the log key and the
// witness's cosignature key (see cosigVerifier); prints one line of JSON
// and exits 0 if both signatures verified, 1 otherwise.
//
// witness: a minimal witness. It holds, in memory, the size and root it
// last cosigned for each log given with -log (a note vkey whose name is the
// origin), answers POST /add-checkpoint with the spec's status codes and
// cosigns with a fresh Ed25519 key as a c2sp.org/tlog-cosignature
// cosignature/v1 (key type 0x04), whose vkey it writes to -vkey-out before
// printing "tlogwitness listening on http://HOST:PORT/". It exits after
// -lifetime whatever happens, so that a test can never leave it behind.
//
// client: a minimal log. It keeps an RFC 6962 tree in memory (tlog.
// StoredHashes, tlog.TreeHash), signs C2SP checkpoints with the note key
// -skey (-log-vkey is its vkey), and reads commands from stdin, one per
// line, answering each with one line of JSON on stdout (the first line,
// "keys", says what x/mod's note.NewVerifier makes of the witness vkey):
//
//	append N [TAG]  append N leaves "TAG <index>\n" (TAG defaults to "leaf")
//	submit OLD      sign a checkpoint of the current tree, POST an
//	                add-checkpoint request with the tlog.ProveTree proof from
//	                OLD; on a 409 read the size the witness holds and, once,
//	                prove from that size and POST again. A 200's body is
//	                verified with note.Open, the witness's key being a
//	                note.Verifier for cosignature/v1 (see cosigVerifier).
package main

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const (
	algCosignatureV1 = 0x04 // c2sp.org/tlog-cosignature, Ed25519
	maxProofLines    = 63   // c2sp.org/tlog-witness
	maxBody          = 1 << 20
	sizeType         = "text/x.tlog.size"
	textType         = "text/plain; charset=utf-8"
)

// emptyRoot is the RFC 6962 root of the empty tree, SHA-256 of nothing
// (x/mod 0.7.0's tlog.TreeHash(0) returns zeros instead).
var emptyRoot = tlog.Hash(sha256.Sum256(nil))

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  tlogwitness keygen -name NAME -out DIR
  tlogwitness witness -name NAME -vkey-out FILE -log VKEYFILE... [-listen ADDR] [-lifetime D]
  tlogwitness client -skey FILE -log-vkey FILE -witness URL -witness-vkey FILE < SCRIPT
  tlogwitness open -log-vkey FILE -witness-vkey FILE NOTE
`)
	os.Exit(2)
}

func fatalf(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "tlogwitness: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "keygen":
		cmdKeygen(os.Args[2:])
	case "witness":
		cmdWitness(os.Args[2:])
	case "client":
		cmdClient(os.Args[2:])
	case "open":
		cmdOpen(os.Args[2:])
	default:
		usage()
	}
}

type fileList []string

func (f *fileList) String() string     { return strings.Join(*f, ",") }
func (f *fileList) Set(s string) error { *f = append(*f, s); return nil }

func parseFlags(fs *flag.FlagSet, args []string, nargs int) {
	fs.Usage = usage
	if err := fs.Parse(args); err != nil || fs.NArg() != nargs {
		usage()
	}
}

// readKey reads a one-line key file; one trailing newline is allowed.
func readKey(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		fatalf("%v", err)
	}
	return strings.TrimSuffix(string(data), "\n")
}

func cmdKeygen(args []string) {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	name := fs.String("name", "", "key name (the log's origin)")
	out := fs.String("out", "", "output directory")
	parseFlags(fs, args, 0)
	if *name == "" || *out == "" {
		usage()
	}
	skey, vkey, err := note.GenerateKey(rand.Reader, *name)
	if err != nil {
		fatalf("note.GenerateKey: %v", err)
	}
	for file, data := range map[string]string{"skey": skey + "\n", "vkey": vkey + "\n"} {
		if err := os.WriteFile(filepath.Join(*out, file), []byte(data), 0o600); err != nil {
			fatalf("%v", err)
		}
	}
}

// ---------------------------------------------------------------------------
// cosignature/v1 (c2sp.org/tlog-cosignature) as a note.Signer and a
// note.Verifier. x/mod's note.NewVerifier knows only type 0x01 (it refuses a
// 0x04 vkey: "unknown verifier algorithm"), but note.Open and note.Sign take
// any implementation of the interfaces: the signature bytes after the key
// hash are the 8-byte big-endian timestamp and the Ed25519 signature of
// "cosignature/v1\ntime <timestamp>\n" followed by the note text.

func cosigKeyHash(name string, pub ed25519.PublicKey) uint32 {
	h := sha256.New()
	h.Write([]byte(name + "\n"))
	h.Write([]byte{algCosignatureV1})
	h.Write(pub)
	return binary.BigEndian.Uint32(h.Sum(nil))
}

func cosignedMessage(timestamp uint64, text []byte) []byte {
	return append([]byte(fmt.Sprintf("cosignature/v1\ntime %d\n", timestamp)), text...)
}

type cosigSigner struct {
	name string
	priv ed25519.PrivateKey
	now  func() time.Time
}

func (s *cosigSigner) Name() string { return s.name }
func (s *cosigSigner) KeyHash() uint32 {
	return cosigKeyHash(s.name, s.priv.Public().(ed25519.PublicKey))
}
func (s *cosigSigner) Sign(text []byte) ([]byte, error) {
	t := uint64(s.now().Unix())
	sig := make([]byte, 8, 8+ed25519.SignatureSize)
	binary.BigEndian.PutUint64(sig, t)
	return append(sig, ed25519.Sign(s.priv, cosignedMessage(t, text))...), nil
}

func (s *cosigSigner) vkey() string {
	pub := s.priv.Public().(ed25519.PublicKey)
	return fmt.Sprintf("%s+%08x+%s", s.name, s.KeyHash(),
		base64.StdEncoding.EncodeToString(append([]byte{algCosignatureV1}, pub...)))
}

type cosigVerifier struct {
	name string
	hash uint32
	pub  ed25519.PublicKey
	last uint64 // the timestamp of the last signature verified
}

func (v *cosigVerifier) Name() string    { return v.name }
func (v *cosigVerifier) KeyHash() uint32 { return v.hash }
func (v *cosigVerifier) Verify(text, sig []byte) bool {
	if len(sig) != 8+ed25519.SignatureSize {
		return false
	}
	t := binary.BigEndian.Uint64(sig)
	if t >= 1<<63 {
		return false
	}
	if !ed25519.Verify(v.pub, cosignedMessage(t, text), sig[8:]) {
		return false
	}
	v.last = t
	return true
}

// newCosigVerifier parses a cosignature/v1 vkey, <name>+<hex hash>+<base64(0x04 || key)>.
func newCosigVerifier(vkey string) (*cosigVerifier, error) {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 || parts[0] == "" || len(parts[1]) != 8 {
		return nil, errors.New("malformed cosignature vkey")
	}
	hash, err1 := strconv.ParseUint(parts[1], 16, 32)
	key, err2 := base64.StdEncoding.DecodeString(parts[2])
	if err1 != nil || err2 != nil || len(key) != 1+ed25519.PublicKeySize || key[0] != algCosignatureV1 {
		return nil, errors.New("malformed cosignature vkey (want type 0x04 and a 32-byte Ed25519 key)")
	}
	pub := ed25519.PublicKey(key[1:])
	if uint32(hash) != cosigKeyHash(parts[0], pub) {
		return nil, errors.New("cosignature vkey: key hash does not match")
	}
	return &cosigVerifier{name: parts[0], hash: uint32(hash), pub: pub}, nil
}

// ---------------------------------------------------------------------------
// Checkpoints and add-checkpoint bodies

type checkpoint struct {
	origin string
	size   int64
	root   tlog.Hash
}

// parseDecimal: ASCII decimal without leading zeros, below 2**63.
func parseDecimal(s string) (int64, error) {
	if s == "" || (len(s) > 1 && s[0] == '0') || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not a decimal number", s)
	}
	return strconv.ParseInt(s, 10, 64)
}

func parseHash(s string) (tlog.Hash, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != tlog.HashSize || base64.StdEncoding.EncodeToString(b) != s {
		return tlog.Hash{}, fmt.Errorf("%q is not a base64 hash", s)
	}
	var h tlog.Hash
	copy(h[:], b)
	return h, nil
}

// parseCheckpoint reads a c2sp.org/tlog-checkpoint note text.
func parseCheckpoint(text string) (checkpoint, error) {
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if !strings.HasSuffix(text, "\n") || len(lines) < 3 {
		return checkpoint{}, errors.New("a checkpoint has at least three lines")
	}
	for _, l := range lines {
		if l == "" {
			return checkpoint{}, errors.New("a checkpoint has no empty line")
		}
	}
	size, err := parseDecimal(lines[1])
	if err != nil {
		return checkpoint{}, fmt.Errorf("tree size: %v", err)
	}
	root, err := parseHash(lines[2])
	if err != nil {
		return checkpoint{}, fmt.Errorf("root hash: %v", err)
	}
	return checkpoint{lines[0], size, root}, nil
}

func checkpointText(origin string, size int64, root tlog.Hash) string {
	return fmt.Sprintf("%s\n%d\n%s\n", origin, size, base64.StdEncoding.EncodeToString(root[:]))
}

type request struct {
	old   int64
	proof tlog.TreeProof
	note  []byte // the signed checkpoint
}

func parseRequest(body []byte) (request, error) {
	var req request
	line, rest, ok := cut(body)
	if !ok || !bytes.HasPrefix(line, []byte("old ")) {
		return req, errors.New("no old size line")
	}
	old, err := parseDecimal(string(line[4:]))
	if err != nil {
		return req, fmt.Errorf("old size: %v", err)
	}
	req.old = old
	for {
		line, rest, ok = cut(rest)
		if !ok {
			return req, errors.New("no empty line before the checkpoint")
		}
		if len(line) == 0 {
			break
		}
		if len(req.proof) == maxProofLines {
			return req, fmt.Errorf("more than %d proof lines", maxProofLines)
		}
		h, err := parseHash(string(line))
		if err != nil {
			return req, fmt.Errorf("proof line: %v", err)
		}
		req.proof = append(req.proof, h)
	}
	req.note = rest
	return req, nil
}

// cut splits off the first line (without its newline).
func cut(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return nil, nil, false
	}
	return b[:i], b[i+1:], true
}

// ---------------------------------------------------------------------------
// The witness

type logState struct {
	verifier note.Verifier
	size     int64
	root     tlog.Hash
}

type witness struct {
	mu     sync.Mutex // held for a whole decision: check and update are atomic
	signer *cosigSigner
	logs   map[string]*logState
}

type refusal struct {
	status int
	reason string
}

func (w *witness) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	status, ctype, body, reason := w.handle(rw, r)
	rw.Header().Set("Content-Type", ctype)
	rw.WriteHeader(status)
	rw.Write(body)
	fmt.Fprintf(os.Stderr, "tlogwitness: %s %s %d %s\n", r.Method, r.URL.Path, status, reason)
}

func (w *witness) handle(rw http.ResponseWriter, r *http.Request) (int, string, []byte, string) {
	if r.URL.Path != "/add-checkpoint" {
		return 404, textType, []byte("not found\n"), "no such endpoint"
	}
	if r.Method != http.MethodPost {
		rw.Header().Set("Allow", "POST")
		return 405, textType, []byte("POST only\n"), "method not allowed"
	}
	body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, maxBody))
	if err != nil {
		return 400, textType, []byte("bad body\n"), err.Error()
	}
	line, size, ref := w.decide(body)
	if ref != nil {
		if ref.status == 409 {
			return 409, sizeType, []byte(fmt.Sprintf("%d\n", size)), ref.reason
		}
		return ref.status, textType, []byte(ref.reason + "\n"), ref.reason
	}
	return 200, textType, line, "cosigned"
}

// decide returns the cosignature line, or a refusal (with the size held, for a 409).
func (w *witness) decide(body []byte) ([]byte, int64, *refusal) {
	req, err := parseRequest(body)
	if err != nil {
		return nil, 0, &refusal{400, "bad request: " + err.Error()}
	}
	// note.Open with no known key parses the note: an UnverifiedNoteError
	// carries it, any other error is a malformed note.
	_, err = note.Open(req.note, note.VerifierList())
	var unverified *note.UnverifiedNoteError
	if !errors.As(err, &unverified) {
		return nil, 0, &refusal{400, fmt.Sprintf("bad request: checkpoint note: %v", err)}
	}
	text := unverified.Note.Text
	cp, err := parseCheckpoint(text)
	if err != nil {
		return nil, 0, &refusal{400, "bad request: " + err.Error()}
	}
	if req.old > cp.size {
		return nil, 0, &refusal{400, fmt.Sprintf("bad request: old size %d above the checkpoint size %d", req.old, cp.size)}
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	log, ok := w.logs[cp.origin]
	if !ok {
		return nil, 0, &refusal{404, fmt.Sprintf("unknown log %q", cp.origin)}
	}
	if _, err := note.Open(req.note, note.VerifierList(log.verifier)); err != nil {
		return nil, 0, &refusal{403, fmt.Sprintf("not signed by the log key: %v", err)}
	}
	if req.old != log.size {
		return nil, log.size, &refusal{409, fmt.Sprintf("conflict: holds size %d, request proves from %d", log.size, req.old)}
	}
	switch {
	case cp.size == 0 && cp.root != emptyRoot:
		return nil, 0, &refusal{422, "a size-0 checkpoint must have the empty tree's root"}
	case req.old == 0 && len(req.proof) != 0:
		return nil, 0, &refusal{422, "a proof from size 0 must be empty"}
	case cp.size == log.size && cp.root != log.root:
		return nil, 0, &refusal{422, "same size, another root: a fork"}
	case req.old == 0:
	case req.old == cp.size:
		if len(req.proof) != 0 {
			return nil, 0, &refusal{422, "a proof between equal sizes must be empty"}
		}
	default:
		if err := tlog.CheckTree(req.proof, cp.size, cp.root, req.old, log.root); err != nil {
			return nil, 0, &refusal{422, fmt.Sprintf("tlog.CheckTree: %v", err)}
		}
	}
	signed, err := note.Sign(&note.Note{Text: text}, w.signer)
	if err != nil {
		return nil, 0, &refusal{500, fmt.Sprintf("note.Sign: %v", err)}
	}
	log.size, log.root = cp.size, cp.root
	return signed[len(text)+1:], 0, nil // note.Sign wrote the text, a blank line, our line
}

func cmdWitness(args []string) {
	fs := flag.NewFlagSet("witness", flag.ContinueOnError)
	name := fs.String("name", "", "the witness's key name")
	vkeyOut := fs.String("vkey-out", "", "write the witness's cosignature/v1 vkey here")
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	lifetime := fs.Duration("lifetime", 5*time.Minute, "exit after this long")
	var logs fileList
	fs.Var(&logs, "log", "a log's note vkey file (repeatable); its name is the origin")
	parseFlags(fs, args, 0)
	if *name == "" || *vkeyOut == "" || len(logs) == 0 {
		usage()
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		fatalf("ed25519.GenerateKey: %v", err)
	}
	w := &witness{signer: &cosigSigner{*name, priv, time.Now}, logs: map[string]*logState{}}
	for _, path := range logs {
		v, err := note.NewVerifier(readKey(path))
		if err != nil {
			fatalf("%s: note.NewVerifier: %v", path, err)
		}
		w.logs[v.Name()] = &logState{verifier: v, size: 0, root: emptyRoot}
	}
	if err := os.WriteFile(*vkeyOut, []byte(w.signer.vkey()+"\n"), 0o644); err != nil {
		fatalf("%v", err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fatalf("listen: %v", err)
	}
	time.AfterFunc(*lifetime, func() {
		fmt.Fprintf(os.Stderr, "tlogwitness: lifetime of %v over, exiting\n", *lifetime)
		os.Exit(3)
	})
	fmt.Printf("tlogwitness listening on http://%s/\n", ln.Addr())
	srv := &http.Server{Handler: w, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second,
		IdleTimeout: 30 * time.Second}
	fatalf("serve: %v", srv.Serve(ln))
}

// ---------------------------------------------------------------------------
// The client (a log)

type tree struct {
	hashes []tlog.Hash // tlog's stored hashes, by stored hash index
	size   int64
}

func (t *tree) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(t.hashes)) {
			return nil, fmt.Errorf("no stored hash %d", x)
		}
		out[i] = t.hashes[x]
	}
	return out, nil
}

func (t *tree) append(data []byte) {
	hs, err := tlog.StoredHashes(t.size, data, t)
	if err != nil {
		fatalf("tlog.StoredHashes: %v", err)
	}
	t.hashes = append(t.hashes, hs...)
	t.size++
}

func (t *tree) root(n int64) tlog.Hash {
	if n == 0 {
		return emptyRoot
	}
	h, err := tlog.TreeHash(n, t)
	if err != nil {
		fatalf("tlog.TreeHash: %v", err)
	}
	return h
}

type attempt struct {
	Old    int64  `json:"old"`
	Proof  int    `json:"proof_hashes"`
	Status int    `json:"status"`
	Type   string `json:"content_type"`
	Body   string `json:"body"`
}

type result struct {
	Cmd         string    `json:"cmd"`
	Size        int64     `json:"size"`
	Root        string    `json:"root,omitempty"`
	Checkpoint  string    `json:"checkpoint,omitempty"`
	Attempts    []attempt `json:"attempts,omitempty"`
	Cosigned    bool      `json:"cosigned"`
	Timestamp   uint64    `json:"timestamp,omitempty"`
	Cosignature string    `json:"cosignature,omitempty"`
	Error       string    `json:"error,omitempty"`
	XmodVkey    string    `json:"xmod_newverifier_error,omitempty"`
}

type client struct {
	tree     tree
	signer   note.Signer
	logV     note.Verifier
	witnessV *cosigVerifier
	url      string
	http     *http.Client
}

func (c *client) request(old int64, signed []byte) ([]byte, int, error) {
	var proof tlog.TreeProof
	if old > 0 && old < c.tree.size {
		p, err := tlog.ProveTree(c.tree.size, old, &c.tree)
		if err != nil {
			return nil, 0, fmt.Errorf("tlog.ProveTree: %v", err)
		}
		proof = p
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "old %d\n", old)
	for _, h := range proof {
		fmt.Fprintf(&b, "%s\n", base64.StdEncoding.EncodeToString(h[:]))
	}
	b.WriteString("\n")
	b.Write(signed)
	return b.Bytes(), len(proof), nil
}

func (c *client) post(old int64, signed []byte) (attempt, []byte, error) {
	body, n, err := c.request(old, signed)
	if err != nil {
		return attempt{}, nil, err
	}
	resp, err := c.http.Post(c.url+"add-checkpoint", "text/plain", bytes.NewReader(body))
	if err != nil {
		return attempt{}, nil, err
	}
	defer resp.Body.Close()
	reply, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return attempt{}, nil, err
	}
	return attempt{old, n, resp.StatusCode, resp.Header.Get("Content-Type"), string(reply)}, reply, nil
}

func (c *client) submit(old int64) result {
	size := c.tree.size
	root := c.tree.root(size)
	text := checkpointText(c.signer.Name(), size, root)
	signed, err := note.Sign(&note.Note{Text: text}, c.signer)
	res := result{Cmd: "submit", Size: size, Root: base64.StdEncoding.EncodeToString(root[:]), Checkpoint: string(signed)}
	if err != nil {
		res.Error = fmt.Sprintf("note.Sign: %v", err)
		return res
	}
	for try := 0; try < 2; try++ {
		a, reply, err := c.post(old, signed)
		if err != nil {
			res.Error = err.Error()
			return res
		}
		res.Attempts = append(res.Attempts, a)
		switch a.Status {
		case 200:
			c.verify(&res, signed, reply)
			return res
		case 409:
			if a.Type != sizeType || !strings.HasSuffix(a.Body, "\n") {
				res.Error = "409 without a text/x.tlog.size body"
				return res
			}
			held, err := parseDecimal(strings.TrimSuffix(a.Body, "\n"))
			if err != nil || held > size {
				res.Error = fmt.Sprintf("409 body: %q", a.Body)
				return res
			}
			old = held // re-prove from the size the witness holds
		default:
			return res
		}
	}
	return res
}

// verify: the reply's lines are cosignatures by the witness on our
// checkpoint: note.Open of the checkpoint with them appended, knowing the
// log key and the witness's cosignature key, must verify both.
func (c *client) verify(res *result, signed, reply []byte) {
	if !bytes.HasPrefix(reply, []byte("— ")) || !bytes.HasSuffix(reply, []byte("\n")) {
		res.Error = "the reply is not signature lines"
		return
	}
	n, err := note.Open(append(append([]byte{}, signed...), reply...), note.VerifierList(c.logV, c.witnessV))
	if err != nil {
		res.Error = fmt.Sprintf("note.Open: %v", err)
		return
	}
	for _, s := range n.Sigs {
		if s.Name == c.witnessV.name && s.Hash == c.witnessV.hash {
			res.Cosigned, res.Timestamp, res.Cosignature = true, c.witnessV.last, string(reply)
			return
		}
	}
	res.Error = "no cosignature by the witness in the reply"
}

func cmdClient(args []string) {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	skey := fs.String("skey", "", "the log's note skey file")
	url := fs.String("witness", "", "the witness's URL prefix (ending in /)")
	wvkey := fs.String("witness-vkey", "", "the witness's cosignature/v1 vkey file")
	logVkey := fs.String("log-vkey", "", "the log's note vkey file")
	parseFlags(fs, args, 0)
	if *skey == "" || *logVkey == "" || *url == "" || *wvkey == "" {
		usage()
	}
	signer, err := note.NewSigner(readKey(*skey))
	if err != nil {
		fatalf("note.NewSigner: %v", err)
	}
	logV, err := note.NewVerifier(readKey(*logVkey))
	if err != nil {
		fatalf("note.NewVerifier: %v", err)
	}
	if logV.Name() != signer.Name() || logV.KeyHash() != signer.KeyHash() {
		fatalf("-log-vkey is not the key of -skey")
	}
	wv, err := newCosigVerifier(readKey(*wvkey))
	if err != nil {
		fatalf("%s: %v", *wvkey, err)
	}
	c := &client{signer: signer, logV: logV, witnessV: wv, url: *url, http: &http.Client{Timeout: 15 * time.Second}}
	out := json.NewEncoder(os.Stdout)
	// What x/mod itself makes of the witness's vkey.
	keys := result{Cmd: "keys"}
	if _, err := note.NewVerifier(readKey(*wvkey)); err != nil {
		keys.XmodVkey = err.Error()
	}
	out.Encode(keys)

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 0 {
			continue
		}
		switch {
		case f[0] == "append" && (len(f) == 2 || len(f) == 3):
			n, err := parseDecimal(f[1])
			if err != nil {
				fatalf("append: %v", err)
			}
			tag := "leaf"
			if len(f) == 3 {
				tag = f[2]
			}
			for i := int64(0); i < n; i++ {
				c.tree.append([]byte(fmt.Sprintf("%s %d\n", tag, c.tree.size)))
			}
			out.Encode(result{Cmd: "append", Size: c.tree.size})
		case f[0] == "submit" && len(f) == 2:
			old, err := parseDecimal(f[1])
			if err != nil {
				fatalf("submit: %v", err)
			}
			out.Encode(c.submit(old))
		default:
			fatalf("unknown command %q", in.Text())
		}
	}
}

func cmdOpen(args []string) {
	fs := flag.NewFlagSet("open", flag.ContinueOnError)
	logVkey := fs.String("log-vkey", "", "the log's note vkey file")
	wvkey := fs.String("witness-vkey", "", "the witness's cosignature/v1 vkey file")
	parseFlags(fs, args, 1)
	if *logVkey == "" || *wvkey == "" {
		usage()
	}
	logV, err := note.NewVerifier(readKey(*logVkey))
	if err != nil {
		fatalf("note.NewVerifier: %v", err)
	}
	wv, err := newCosigVerifier(readKey(*wvkey))
	if err != nil {
		fatalf("%s: %v", *wvkey, err)
	}
	msg, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		fatalf("%v", err)
	}
	type opened struct {
		Verified  []string `json:"verified"`
		Timestamp uint64   `json:"timestamp,omitempty"`
		Error     string   `json:"error,omitempty"`
	}
	var res opened
	n, err := note.Open(msg, note.VerifierList(logV, wv))
	if err != nil {
		res.Error = fmt.Sprintf("note.Open: %v", err)
	} else {
		for _, s := range n.Sigs {
			res.Verified = append(res.Verified, s.Name)
		}
		if len(n.Sigs) == 2 {
			res.Timestamp = wv.last
		} else {
			res.Error = "not signed by both the log and the witness"
		}
	}
	json.NewEncoder(os.Stdout).Encode(res)
	if res.Error != "" {
		os.Exit(1)
	}
}
