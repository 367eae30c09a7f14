/* fundledger: verify the log in the visitor's browser.
 *
 * Fetches /vkey, /checkpoint and the C2SP tlog-tiles of this site and
 * checks, trusting nothing the server computed:
 *   - every entry is a signed note by the log key in force (Ed25519 via
 *     WebCrypto, after the explicit checks of docs/FORMAT.md: no small-order
 *     or non-canonical key or R, S below L); a key entry hands over to a new
 *     key and is signed by both;
 *   - entry n carries seq n and prev = base64 SHA-256(0x00 || entry n-1)
 *     (32 zero bytes for entry 0), in canonical JSON with exactly the
 *     fields of its kind;
 *   - every movement, payout, ADL amount and balance, recomputed with BigInt
 *     from the entry's own inputs by the rules of ledger/rules/fund.py;
 *   - for a lot contract (docs/FORMAT.md, "Auto-deleveraging"), the minimum
 *     ADL of a liquidation its fund cannot pay, and its adl entries right
 *     after it: the positions closed, ranked by their exact scores, adding
 *     up to adl_qty, the top of the queue whose root the liquidation
 *     commits to (ledger/rules/adl.py);
 *   - the RFC 6962 root of all entries equals the checkpoint's root, the
 *     checkpoint is signed by the key in force at its size, and every hash
 *     tile equals the recomputed tree;
 *   - the balances shown on this page equal the recomputed ones.
 *   - so do the balances of /funds.json (what the other pages show), at the
 *     size the site says it verified.
 * A failure names the same entry, and for an entry breaking several checks
 * the same first one, as ledger/verify/verifier.py (docs/FORMAT.md, "The order of
 * checks").
 * The signature checks run in Web Workers on every core, while the rules
 * are replayed here in seq order. Over data-auto-limit entries (default
 * 50,000) it first says what the replay will cost (download, memory, time
 * at this browser's measured rate) and waits for the visitor's button; over
 * data-desktop-limit (default 1,000,000) it says the replay is for a
 * desktop and points to each fund's own check. ?full=1 starts at once.
 *
 * No library, no network access but this site. Plain ES2020.
 */
"use strict";

(function () {
  const TILE_WIDTH = 256;
  const MAX_ENTRY_BYTES = 65535;
  const enc = new TextEncoder();
  const dec = new TextDecoder("utf-8", { fatal: true });

  class Failure extends Error {
    constructor(msg, step) { super(msg); this.step = step; }
  }
  /** Stop with a reason; ``step`` names the step of the page's list that failed. */
  function fail(msg, step) { throw new Failure(msg, step); }

  // --- bytes ------------------------------------------------------------------

  function concat(...parts) {
    let n = 0;
    for (const p of parts) n += p.length;
    const out = new Uint8Array(n);
    let o = 0;
    for (const p of parts) { out.set(p, o); o += p.length; }
    return out;
  }
  function equal(a, b) {
    if (a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
    return true;
  }
  function b64encode(bytes) {
    let s = "";
    for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    return btoa(s);
  }
  /** Strict standard base64 with padding: decoding and re-encoding must give the same string. */
  function b64decode(s, what) {
    let bin;
    try { bin = atob(s); } catch (e) { fail(`${what} is not base64`); }
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    if (b64encode(out) !== s) fail(`${what} is not canonical base64`);
    return out;
  }
  function hex(bytes) { return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(""); }
  function decode(bytes, what) {
    try { return dec.decode(bytes); } catch (e) { fail(`${what} is not UTF-8`); }
  }
  async function sha256(bytes) { return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)); }
  // SHA-256 (FIPS 180-4) in plain JS, synchronous: for the many small hashes
  // of the fund check (tree nodes, leaves), where awaiting WebCrypto once a
  // hash costs more than the hash.
  const K256 = new Uint32Array([
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2]);
  const W256 = new Uint32Array(64);
  function sha256Sync(data) {
    const n = data.length, total = ((n + 9 + 63) >> 6) << 6;
    const m = new Uint8Array(total);
    m.set(data);
    m[n] = 0x80;
    const bits = n * 8;
    m[total - 4] = bits >>> 24; m[total - 3] = bits >>> 16; m[total - 2] = bits >>> 8; m[total - 1] = bits;
    m[total - 5] = Math.floor(bits / 2 ** 32);
    let h0 = 0x6a09e667, h1 = 0xbb67ae85, h2 = 0x3c6ef372, h3 = 0xa54ff53a,
      h4 = 0x510e527f, h5 = 0x9b05688c, h6 = 0x1f83d9ab, h7 = 0x5be0cd19;
    const w = W256;
    for (let off = 0; off < total; off += 64) {
      for (let i = 0; i < 16; i++) {
        const j = off + 4 * i;
        w[i] = (m[j] << 24) | (m[j + 1] << 16) | (m[j + 2] << 8) | m[j + 3];
      }
      for (let i = 16; i < 64; i++) {
        const a = w[i - 15], b = w[i - 2];
        const s0 = ((a >>> 7) | (a << 25)) ^ ((a >>> 18) | (a << 14)) ^ (a >>> 3);
        const s1 = ((b >>> 17) | (b << 15)) ^ ((b >>> 19) | (b << 13)) ^ (b >>> 10);
        w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0;
      }
      let a = h0, b = h1, c = h2, d = h3, e = h4, f = h5, g = h6, h = h7;
      for (let i = 0; i < 64; i++) {
        const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
        const t1 = (h + S1 + ((e & f) ^ (~e & g)) + K256[i] + w[i]) | 0;
        const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
        const t2 = (S0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
        h = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b; b = a; a = (t1 + t2) | 0;
      }
      h0 = (h0 + a) | 0; h1 = (h1 + b) | 0; h2 = (h2 + c) | 0; h3 = (h3 + d) | 0;
      h4 = (h4 + e) | 0; h5 = (h5 + f) | 0; h6 = (h6 + g) | 0; h7 = (h7 + h) | 0;
    }
    const out = new Uint8Array(32);
    [h0, h1, h2, h3, h4, h5, h6, h7].forEach((x, i) => {
      out[4 * i] = x >>> 24; out[4 * i + 1] = x >>> 16; out[4 * i + 2] = x >>> 8; out[4 * i + 3] = x;
    });
    return out;
  }
  function leafHashSync(data) { return sha256Sync(concat(Uint8Array.of(0), data)); }
  function nodeHashSync(l, r) { return sha256Sync(concat(Uint8Array.of(1), l, r)); }
  const ZERO32 = new Uint8Array(32);
  function leafHash(data) { return sha256(concat(Uint8Array.of(0), data)); }
  function nodeHash(l, r) { return sha256(concat(Uint8Array.of(1), l, r)); }

  // --- fetching -------------------------------------------------------------------

  const base = new URL("./", document.baseURI).origin + "/";
  let bytesFetched = 0;
  async function get(path, { optional = false } = {}) {
    let r;
    try {
      r = await fetch(base + path, { cache: path === "checkpoint" ? "no-store" : "default", credentials: "omit" });
    } catch (e) {
      fail(`could not fetch /${path}: ${e.message}`);
    }
    if (r.status === 404 && optional) return null;
    if (!r.ok) fail(`/${path}: HTTP ${r.status}`);
    const b = new Uint8Array(await r.arrayBuffer());
    bytesFetched += b.length;
    return b;
  }

  /** Files fetched ahead of their turn: ``ahead(path)`` starts a fetch
   *  (once), ``take(path)`` gives its bytes (fetching it now if it was not
   *  asked ahead) and forgets it. A failed fetch ahead fails at its take. */
  class Prefetch {
    constructor() { this.files = new Map(); }
    ahead(path) {
      if (!this.files.has(path)) {
        const p = get(path);
        p.catch(() => {});
        this.files.set(path, p);
      }
    }
    take(path) {
      const p = this.files.get(path);
      this.files.delete(path);
      return p || get(path);
    }
  }

  // --- signed notes (c2sp.org/signed-note) -------------------------------------

  function checkKeyName(name, what) {
    if (!name || name.includes("+") || /\s/u.test(name) || /[\u0000-\u001f\u007f-\u009f]/u.test(name)) {
      fail(`${what}: bad key name`);
    }
  }

  async function keyId(name, alg, pub) {
    return (await sha256(concat(enc.encode(name), Uint8Array.of(0x0a, alg), pub))).subarray(0, 4);
  }

  // --- Ed25519 checks made before WebCrypto's (docs/FORMAT.md, "Signatures") ------
  // WebCrypto implementations differ on edge cases that libsodium refuses:
  // a key or R that is a small-order point or a non-canonical encoding, an
  // S not below L. Every fundledger verifier refuses them explicitly.

  const FIELD_P = (1n << 255n) - 19n;
  const ORDER_L = (1n << 252n) + 27742317777372353535851937790883648493n;
  const ORDER8_Y = 2707385501144840649318225287225658788936804267575313519463743609750303402022n;
  function leBytes(n) {
    const out = new Uint8Array(32);
    for (let i = 0; i < 32; i++) { out[i] = Number(n & 0xffn); n >>= 8n; }
    return out;
  }
  function leInt(bytes) {
    let n = 0n;
    for (let i = bytes.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(bytes[i]);
    return n;
  }
  /** The 48 refused encodings (as hex): the 8 small-order points, x = 0 with the sign bit, every y >= p. */
  const REFUSED_POINTS = (() => {
    const out = new Set();
    const ys = [1n, FIELD_P - 1n, 0n, ORDER8_Y, FIELD_P - ORDER8_Y];
    for (let y = FIELD_P; y < (1n << 255n); y++) ys.push(y);
    for (const y of ys) for (const sign of [0n, 1n]) out.add(hex(leBytes(y | (sign << 255n))));
    return out;
  })();
  // their first four bytes, as a number: almost every point is told apart by those alone
  const REFUSED_PREFIXES = new Set([...REFUSED_POINTS].map((h) => parseInt(h.slice(0, 8), 16)));
  function refusedPoint(bytes) {
    const prefix = ((bytes[0] << 24) | (bytes[1] << 16) | (bytes[2] << 8) | bytes[3]) >>> 0;
    return REFUSED_PREFIXES.has(prefix) && REFUSED_POINTS.has(hex(bytes));
  }
  /** R neither small-order nor non-canonical, S below L (S < 2**252 < L when its top byte is below 0x10). */
  function sigShapeOk(sig) {
    return sig.length === 64 && !refusedPoint(sig.subarray(0, 32)) && (sig[63] < 0x10 || leInt(sig.subarray(32)) < ORDER_L);
  }

  /** A vkey "<name>+<hex key id>+<base64(0x01 || public key)>" as a WebCrypto key. */
  async function parseVkey(s, what) {
    // name and key id hold no "+"; the base64 key may
    const parts = s.split("+");
    if (parts.length < 3) fail(`${what} is not a verifier key`);
    const [name, hid] = parts;
    const b64 = parts.slice(2).join("+");
    checkKeyName(name, what);
    if (!/^[0-9a-f]{8}$/.test(hid)) fail(`${what}: bad key id`);
    const raw = b64decode(b64, what);
    if (raw.length !== 33 || raw[0] !== 0x01) fail(`${what} is not an Ed25519 key`);
    const pub = raw.subarray(1);
    if (refusedPoint(pub)) fail(`${what}: the public key is a small-order or non-canonical Ed25519 point`);
    const kid = await keyId(name, 0x01, pub);
    if (hex(kid) !== hid) fail(`${what}: the key id does not match the key`);
    let key;
    try {
      key = await crypto.subtle.importKey("raw", pub, { name: "Ed25519" }, false, ["verify"]);
    } catch (e) {
      fail("this browser cannot check Ed25519 signatures (WebCrypto Ed25519 needs Chrome 137+, Firefox 129+ or Safari 17+)");
    }
    return { name, kid, pub, key, vkey: s };
  }

  const EM_DASH = "\u2014 ";
  /** Split a signed note into its text bytes and its signature lines. */
  function splitNote(bytes, what) {
    const s = decode(bytes, what);
    if (/[\u0000-\u0009\u000b-\u001f]/.test(s)) fail(`${what} has control characters`);
    const i = s.lastIndexOf("\n\n");
    if (i < 0) fail(`${what} has no signature block`);
    // the same place in the bytes (UTF-8 never holds 0x0a inside a character)
    let textLen = bytes.length - 1;
    while (textLen > 0 && !(bytes[textLen] === 0x0a && bytes[textLen - 1] === 0x0a)) textLen--;
    const block = s.slice(i + 2);
    if (!block.endsWith("\n")) fail(`${what}: signature block does not end with a newline`);
    const sigs = block.slice(0, -1).split("\n").map((line) => {
      if (!line.startsWith(EM_DASH)) fail(`${what}: bad signature line`);
      const rest = line.slice(EM_DASH.length);
      const sp = rest.indexOf(" ");
      if (sp < 0) fail(`${what}: bad signature line`);
      const name = rest.slice(0, sp);
      checkKeyName(name, what);
      const raw = b64decode(rest.slice(sp + 1), `${what} signature`);
      if (raw.length < 5) fail(`${what}: signature too short`);
      return { name, kid: raw.subarray(0, 4), sig: raw.subarray(4) };
    });
    return { text: bytes.subarray(0, textLen), textStr: s.slice(0, i + 1), sigs };
  }

  function verifySig(k, sig, text) {
    if (!sigShapeOk(sig)) return Promise.resolve(false);
    return pool.verify(k, sig, text);
  }

  /** Ed25519 verification spread over Web Workers (verify-worker.js), one
   *  per core (navigator.hardwareConcurrency, at most 16), in batches, each
   *  to the worker with the least to do; on this thread when workers are not
   *  available. Each call still gets its own verdict. */
  const BATCH = 64;
  const pool = {
    workers: null, queue: [], waiting: new Map(), id: 0, timer: null,
    start() {
      this.workers = [];
      if (typeof Worker === "undefined") return;
      const n = Math.max(1, Math.min(navigator.hardwareConcurrency || 2, 16));
      try {
        for (let i = 0; i < n; i++) {
          const w = new Worker(base + "static/verify-worker.js");
          w.onmessage = (e) => this.done(e.data);
          w.onerror = () => { this.workers = []; };
          w.load = 0;
          this.workers.push(w);
        }
      } catch (e) { this.workers = []; }
    },
    size() {
      if (this.workers === null) this.start();
      return Math.max(1, this.workers.length);
    },
    verify(k, sig, text) {
      if (this.workers === null) this.start();
      if (!this.workers.length) return crypto.subtle.verify({ name: "Ed25519" }, k.key, sig, text);
      return new Promise((resolve, reject) => {
        this.queue.push({ item: [k.pub, sig, text], resolve, reject, k });
        if (this.queue.length >= BATCH) this.flush();
        else if (!this.timer) this.timer = setTimeout(() => this.flush(), 0);
      });
    },
    flush() {
      clearTimeout(this.timer);
      this.timer = null;
      while (this.queue.length) {
        const batch = this.queue.splice(0, BATCH);
        const id = ++this.id;
        const w = this.workers.reduce((a, b) => (b.load < a.load ? b : a));
        w.load += batch.length;
        this.waiting.set(id, { batch, w });
        w.postMessage({ id, items: batch.map((b) => b.item) });
      }
    },
    done({ id, oks, leaves, error }) {
      const sent = this.waiting.get(id);
      this.waiting.delete(id);
      if (!sent) return;
      sent.w.load -= sent.batch.length;
      if (sent.resolve) return sent.resolve({ leaves, oks, error });
      sent.batch.forEach((b, i) => {
        if (error) crypto.subtle.verify({ name: "Ed25519" }, b.k.key, b.item[1], b.item[2]).then(b.resolve, b.reject);
        else b.resolve(oks[i]);
      });
    },
    /** The leaf hashes of ``items`` (entries, views of ``data``) and the
     *  verdicts of ``jobs`` ([key, signature, text view of data]), the work
     *  split between the workers: {leaves: [hash], oks: [boolean]}. */
    async bundle(data, items, jobs) {
      const here = async () => ({ leaves: await Promise.all(items.map(leafHash)),
        oks: await Promise.all(jobs.map(([k, sig, text]) => crypto.subtle.verify({ name: "Ed25519" }, k.key, sig, text))) });
      if (this.workers === null) this.start();
      if (!this.workers.length) return here();
      const at = (v) => v.byteOffset - data.byteOffset;
      const n = this.workers.length, parts = [];
      for (let w = 0; w < n; w++) {
        const mine = (list) => list.slice(Math.floor((w * list.length) / n), Math.floor(((w + 1) * list.length) / n));
        const spans = mine(items).flatMap((d) => [at(d), d.length]);
        const checks = mine(jobs).map(([k, sig, text]) => [k.pub, sig, at(text), text.length]);
        parts.push(new Promise((resolve, reject) => {
          const id = ++this.id;
          this.waiting.set(id, { batch: [], w: this.workers[w], resolve, reject });
          this.workers[w].postMessage({ id, data, spans, checks });
        }));
      }
      const done = await Promise.all(parts);
      const leaves = [], oks = [];
      if (done.some((r) => r.error)) return here();  // a worker could not: on this thread
      for (const r of done) {
        for (let i = 0; i < r.leaves.length; i += 32) leaves.push(r.leaves.subarray(i, i + 32));
        for (const ok of r.oks) oks.push(ok);
      }
      return { leaves, oks };
    },
    /** Signature checks a second on all workers, from ``items`` ([public key, signature, text]) for about ``ms``. */
    async measure(items, ms) {
      const k = { pub: items[0][0], key: await crypto.subtle.importKey("raw", items[0][0], { name: "Ed25519" }, false, ["verify"]) };
      const t0 = performance.now();
      let n = 0;
      while (performance.now() - t0 < ms) {
        const round = [];
        for (let r = 0; r < this.size(); r++) for (const [, sig, text] of items.slice(0, BATCH)) round.push(this.verify(k, sig, text));
        await Promise.all(round);
        n += round.length;
      }
      return n / ((performance.now() - t0) / 1000);
    },
  };

  /** The checkpoint text: origin, size, base64 root, extension lines. */
  function parseCheckpoint(textStr) {
    const lines = textStr.slice(0, -1).split("\n");
    if (lines.length < 3 || lines.some((l) => l === "")) fail("the checkpoint is malformed");
    if (!/^(0|[1-9][0-9]{0,15})$/.test(lines[1])) fail("the checkpoint's tree size is malformed or too large for this page");
    const root = b64decode(lines[2], "checkpoint root");
    if (root.length !== 32) fail("the checkpoint root is not 32 bytes");
    return { origin: lines[0], size: Number(lines[1]), root };
  }

  // --- tiles (c2sp.org/tlog-tiles) -------------------------------------------------

  function indexPath(n) {
    let groups = [String(n % 1000).padStart(3, "0")];
    n = Math.floor(n / 1000);
    while (n > 0) { groups.unshift("x" + String(n % 1000).padStart(3, "0")); n = Math.floor(n / 1000); }
    return groups.join("/");
  }
  function tilePath(level, index, width) {
    return "tile/" + (level < 0 ? "entries" : level) + "/" + indexPath(index) + (width === TILE_WIDTH ? "" : ".p/" + width);
  }
  /** The partial tiles a tree of `size` publishes: "<level>/<index>" -> [width] (level -1: the entry bundle). */
  function impliedPartials(size) {
    const out = new Map();
    for (let L = 0; Math.floor(size / 2 ** (8 * L)) > 0; L++) {
      const count = Math.floor(size / 2 ** (8 * L));
      if (count % TILE_WIDTH) out.set(`${L}/${Math.floor(count / TILE_WIDTH)}`, [count % TILE_WIDTH]);
    }
    if (size % TILE_WIDTH) out.set(`-1/${Math.floor(size / TILE_WIDTH)}`, [size % TILE_WIDTH]);
    return out;
  }

  /** The entries of a bundle, and the framing fault if any: an entry before
   * the fault is checked (and named) first, as ledger/verify/verifier.py does. */
  function splitBundle(data, width, first) {
    const out = [];
    let pos = 0;
    for (let i = 0; i < width; i++) {
      if (pos + 2 > data.length) return { items: out, error: `entry ${first + i}: the entry bundle is truncated` };
      const n = (data[pos] << 8) | data[pos + 1];
      if (pos + 2 + n > data.length) return { items: out, error: `entry ${first + i}: the entry bundle is truncated` };
      out.push(data.subarray(pos + 2, pos + 2 + n));
      pos += 2 + n;
    }
    if (pos !== data.length) return { items: out, error: `entry ${first + width - 1}: the entry bundle has bytes after its last entry` };
    return { items: out, error: null };
  }

  // --- exact decimals (ledger/rules/fund.py) -----------------------------------------------

  const DECIMAL = /^(0|[1-9][0-9]*)(?:\.([0-9]*[1-9]))?$/;
  /** A canonical strictly positive decimal string -> [units, digits]. */
  function positive(v, what) {
    if (typeof v !== "string") fail(`${what} is not a decimal string`);
    const m = DECIMAL.exec(v);
    if (!m) fail(`${what} is not a canonical decimal: ${v.slice(0, 40)}`);
    const frac = m[2] || "";
    if (m[1].length > 30 || frac.length > 18) fail(`${what} has too many digits`);
    const units = BigInt(m[1] + frac);
    if (units <= 0n) fail(`${what} must be greater than zero`);
    return [units, frac.length];
  }
  function pow10(n) { return 10n ** BigInt(n); }
  function amountStr(units, scale) {
    const neg = units < 0n;
    let u = neg ? -units : units;
    const sign = neg ? "-" : "";
    if (scale === 0) return sign + u.toString();
    const p = pow10(scale);
    return sign + (u / p).toString() + "." + (u % p).toString().padStart(scale, "0");
  }
  function floorDiv(a, b) {  // b > 0
    const q = a / b;
    return (a % b !== 0n && a < 0n) ? q - 1n : q;
  }
  /** The exact movement [num, den] (den > 0): linear q*m*(f-b) (long); inverse q*m*(1/b - 1/f) (long); shorts negated. */
  function movementFraction(type, side, q, m, b, f) {
    const [qn, qk] = q, [mn, mk] = m, [bn, bk] = b, [fn, fk] = f;
    let num = qn * mn * (fn * pow10(bk) - bn * pow10(fk));
    let den;
    if (type === "linear") den = pow10(qk + mk + fk + bk);
    else if (type === "inverse") den = pow10(qk + mk) * bn * fn;
    else fail(`unknown contract type ${type}`);
    if (side === "short") num = -num;
    else if (side !== "long") fail(`unknown side ${side}`);
    return [num, den];
  }
  /** floor(delta * 10**scale) of movementFraction. */
  function movementUnits(type, side, q, m, b, f, scale) {
    const [num, den] = movementFraction(type, side, q, m, b, f);
    return floorDiv(num * pow10(scale), den);
  }
  /** The canonical spelling of units / 10**digits (no trailing zero after the point). */
  function decimalStr(units, digits) {
    const neg = units < 0n;
    let s = (neg ? -units : units).toString();
    if (digits > 0) {
      s = s.padStart(digits + 1, "0");
      const frac = s.slice(s.length - digits).replace(/0+$/, "");
      s = s.slice(0, s.length - digits) + (frac ? "." + frac : "");
    }
    return (neg ? "-" : "") + s;
  }
  /** -1, 0 or 1 as decimal a is below, equal to or above decimal b ([units, digits] each). */
  function compareDecimals(a, b) {
    const x = a[0] * pow10(b[1]), y = b[0] * pow10(a[1]);
    return x < y ? -1 : x > y ? 1 : 0;
  }
  /** How many lots the decimal q is, or null when it is not a whole multiple of ``lot``. */
  function lotsIn(q, lot) {
    const num = q[0] * pow10(lot[1]), den = lot[0] * pow10(q[1]);
    return num % den === 0n ? num / den : null;
  }
  /** -1, 0 or 1: the byte strings a and b in lexicographic (unsigned) order. */
  function compareBytes(a, b) {
    for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] < b[i] ? -1 : 1;
    return a.length === b.length ? 0 : a.length < b.length ? -1 : 1;
  }

  // --- entries ---------------------------------------------------------------------

  /** RFC 8785 for the values an entry may hold (ASCII strings, safe integers):
   *  keys sorted, as JSON.stringify writes them, anything past ASCII escaped. */
  function canonical(obj) {
    const keys = Object.keys(obj).sort();
    for (const k of keys) {
      const v = obj[k];
      if (typeof v !== "string" && !(typeof v === "number" && Number.isSafeInteger(v))) fail("an entry field is neither a string nor an integer");
    }
    return JSON.stringify(obj, keys).replace(/[\u007f-\uffff]/g, (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
  }

  const FIELDS = {
    contract: ["contract", "currency", "kind", "multiplier", "prev", "scale", "seq", "time", "type"],
    liquidation: ["adl", "balance", "bankruptcy_price", "contract", "delta", "fill_price", "id", "kind", "paid",
      "prev", "qty", "seq", "side", "time"],
    key: ["contract", "kind", "prev", "seq", "time", "vkey"],
    state: ["contract", "format", "funds", "heads", "keys", "kind", "prev", "seq", "time"],
    // docs/FORMAT.md, "Auto-deleveraging": the positions an ADL liquidation closed (chain fields added)
    adl: ["contract", "event", "kind", "liquidation", "positions", "prev", "price", "seq", "side", "time"],
  };
  // a liquidation of a lot contract that the fund cannot pay: its minimum ADL and the queue it closes
  const ADL_FIELDS = ["adl_qty", "queue_root", "queue_size"];
  const MAX_QUEUE = 1048576;
  const MAX_POSITIONS = 256;
  const MAX_QUEUE_PROOF = 64;
  const CHAIN_FIELDS = ["chain_prev", "chain_seq"];
  const KEY_FIELDS = ["key_hash", "key_seq"];

  /** RFC 6962 MTH over leaf hashes (the heads root of docs/FORMAT.md, "state"). */
  async function mth(leaves) {
    if (leaves.length === 0) return sha256(new Uint8Array(0));
    if (leaves.length === 1) return leaves[0];
    let k = 1;
    while (k * 2 < leaves.length) k *= 2;
    return nodeHash(await mth(leaves.slice(0, k)), await mth(leaves.slice(k)));
  }
  /** A fund's head line (docs/FORMAT.md, "state"), with its newline. */
  function headLine(sym, f) {
    return `{"balance":"${amountStr(f.balance, f.scale)}","contract":"${sym}","entries":${f.entries},` +
      `"hash":"${b64encode(f.leaf)}","seq":${f.seq}}\n`;
  }
  const SYMBOL = /^[A-Z0-9][A-Z0-9._-]{0,31}$/;
  const CURRENCY = /^[A-Z0-9]{1,16}$/;
  const PRINTABLE_ID = /^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/;
  const TIME = /^([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{0,8}[1-9])?Z$/;

  function checkTime(t) {
    const m = typeof t === "string" && TIME.exec(t);
    if (!m) fail("time is not canonical RFC 3339 UTC");
    const [y, mo, d, h, mi, s] = m.slice(1, 7).map(Number);
    const dt = new Date(0);
    dt.setUTCFullYear(y, mo - 1, d);
    dt.setUTCHours(h, mi, s, 0);
    if (y < 1 || dt.getUTCFullYear() !== y || dt.getUTCMonth() !== mo - 1 || dt.getUTCDate() !== d ||
        dt.getUTCHours() !== h || dt.getUTCMinutes() !== mi || dt.getUTCSeconds() !== s) {
      fail("time is not a valid date");
    }
  }

  /** An entry's fields are exactly ``want``: else the first unexpected one,
   *  then the first missing one, each with its reason in ``why`` if any. */
  function fieldSet(obj, want, why = {}) {
    const have = Object.keys(obj).sort();
    const said = (k) => (why[k] ? " " + why[k] : "");
    for (const k of have) if (!want.includes(k)) fail(`unexpected field '${k.slice(0, 30)}'${said(k)}`);
    for (const k of [...want].sort()) if (!(k in obj)) fail(`missing field '${k}'${said(k)}`);
  }
  // kinds.py's grammars: a canonical decimal above zero (30 digits and 18 after the point at most), a 32-byte hash
  const POSITIVE = /^(?:[1-9][0-9]{0,29}(?:\.[0-9]{0,17}[1-9])?|0\.[0-9]{0,17}[1-9])$/;
  const HASH_B64 = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/;
  function lotText(fund) { return decimalStr(fund.lot[0], fund.lot[1]); }
  /** An ADL event as ledger/rules/adl.py names it. */
  function describe(p) { return `liquidation ${p.id} of ${p.sym} (seq ${p.event})`; }

  /** One position of an ADL event (docs/FORMAT.md, "adl: the positions
   *  closed"), as ledger/rules/adl.py parses it: ``text`` holds six values
   *  (``closed``: with its qty) or five (``next``, a queue leaf), each in its
   *  grammar, the quantities whole lots, the score the exact product of the
   *  profit ratio and the leverage. */
  function parsePosition(text, closed, lot, where) {
    const v = text.split(" ");
    if (v.length !== (closed ? 6 : 5)) fail(`${where} is not ${closed ? "six" : "five"} values separated by one space`);
    const [c, sizeText] = v, [ratioText, leverageText, scoreText] = v.slice(closed ? 3 : 2);
    if (!HASH_B64.test(c)) fail(`${where}: the commitment is not the base64 of 32 bytes: ${c.slice(0, 50)}`);
    const commitment = b64decode(c, `${where}: the commitment`);
    const lotStr = decimalStr(lot[0], lot[1]);
    const quantity = (t, name) => {  // as ledger/rules/adl.py's qty_units: canonical, > 0, at most 30 + 18 digits
      if (!POSITIVE.test(t)) fail(`${where}: ${name} is not a canonical positive decimal: ${t.slice(0, 40)}`);
      return positive(t, `${where}: ${name}`);
    };
    const sizeLots = lotsIn(quantity(sizeText, "size"), lot);
    if (sizeLots === null) fail(`${where}: size ${sizeText} is not a multiple of the lot size ${lotStr}`);
    let qtyLots = null;
    if (closed) {
      qtyLots = lotsIn(quantity(v[2], "qty"), lot);
      if (qtyLots === null) fail(`${where}: qty ${v[2]} is not a multiple of the lot size ${lotStr}`);
      if (qtyLots > sizeLots) fail(`${where} closes ${v[2]}, more than the ${sizeText} it held`);
    }
    const ratio = quantity(ratioText, "pnl_ratio"), leverage = quantity(leverageText, "leverage");
    const score = [ratio[0] * leverage[0], ratio[1] + leverage[1]];
    const product = decimalStr(score[0], score[1]);
    if (scoreText !== product) fail(`${where}: score ${scoreText.slice(0, 60)} is not pnl_ratio * leverage = ${product}`);
    return { commitment, key: c, sizeLots, qtyLots, score, scoreText,
      leaf: [c, sizeText, ratioText, leverageText, scoreText].join(" "), qtyText: closed ? v[2] : null, sizeText };
  }
  /** Position ``pos`` ranks after ``before`` (docs/FORMAT.md, "ranked"): a
   *  lower score, or at an equal score a greater commitment. */
  function ranksAfter(pos, before) {
    const c = compareDecimals(pos.score, before.score);
    return c < 0 || (c === 0 && compareBytes(pos.commitment, before.commitment) > 0);
  }

  /** The replayed state: funds, liquidation ids, log keys. */
  class Book {
    constructor(anchor) {
      this.funds = new Map();
      this.seen = new Set();
      this.keys = [{ start: 0, key: anchor }];
      // format 2 (docs/FORMAT.md): the chains' heads, and where format 2 begins
      this.since = null;
      this.keyCount = 0;
      this.keyHead = null;  // {seq, leaf} of the latest key entry
      this.stateHead = null;
      this.lastKind = null;
      this.pending = null;  // an ADL event whose adl entries do not add up to its adl_qty yet
    }
    /** The chain fields an entry names in format 2: its chain's head, if any. */
    link(head) {
      return this.since === null || !head ? {} : { chain_seq: head.seq, chain_prev: b64encode(head.leaf) };
    }
    async headsRoot() {
      const leaves = [];
      for (const [sym, f] of this.funds) {
        if (!f.headLeaf) f.headLeaf = await leafHash(enc.encode(headLine(sym, f)));
        leaves.push(f.headLeaf);
      }
      return mth(leaves);
    }
    current() { return this.keys[this.keys.length - 1].key; }
    keyAt(size) {
      let k = this.keys[0].key;
      for (const e of this.keys) if (e.start <= size) k = e.key;
      return k;
    }
    balances() {
      const out = new Map();
      for (const [sym, f] of this.funds) out.set(sym, amountStr(f.balance, f.scale));
      return out;
    }

    /** Check entry `obj` against the rules and advance the state. */
    async apply(obj, seq, origin, leaf) {
      const kind = obj.kind;
      let want = FIELDS[kind];
      if (!want) fail(`unknown entry kind ${String(kind).slice(0, 30)}: only contract, liquidation, key, state and adl exist`);
      if (this.pending && kind !== "adl") fail(`${describe(this.pending)} awaits its ADL allocation: the next record must be its adl record`);
      if (kind === "adl") return this.adlEntry(obj, seq, leaf);
      const chain = kind === "liquidation" ? this.link(this.funds.get(obj.contract))
        : kind === "key" ? this.link(this.keyHead) : kind === "state" ? this.link(this.stateHead) : {};
      want = [...want, ...Object.keys(chain), ...(kind === "state" && this.keyHead ? KEY_FIELDS : [])].sort();
      // the inputs first, then the set of fields, then the amounts (the order of ledger/verify/verifier.py)
      const fields = (why = {}) => {
        if ("mark_price" in obj && kind !== "liquidation") fail("unexpected field 'mark_price'");
        fieldSet(obj, want.concat(kind === "liquidation" && "mark_price" in obj ? ["mark_price"] : []), why);
      };
      if (kind === "contract") {
        const sym = obj.contract;
        if (typeof sym !== "string" || !SYMBOL.test(sym)) fail("bad contract symbol");
        if (typeof obj.currency !== "string" || !CURRENCY.test(obj.currency)) fail("bad currency");
        if (!Number.isInteger(obj.scale) || obj.scale < 0 || obj.scale > 18) fail("bad scale");
        if (obj.type !== "linear" && obj.type !== "inverse") fail("bad contract type");
        const mult = positive(obj.multiplier, "multiplier");
        // a lot contract (docs/FORMAT.md, "Lot contracts"): format 2 only
        const hasLot = "lot" in obj && this.since !== null;
        const lot = hasLot ? positive(obj.lot, "lot") : null;
        if (hasLot) want = [...want, "lot"].sort();
        if (this.funds.has(sym)) fail(`contract ${sym} is registered twice`);
        fields({ lot: "(a lot contract is a format-2 entry)" });
        this.funds.set(sym, { scale: obj.scale, type: obj.type, mult, currency: obj.currency, balance: 0n,
          seq, leaf, entries: 1, headLeaf: null, lot });
        this.lastKind = kind;
        return;
      }
      if (kind === "key") {
        fields();
        if (obj.contract !== "") fail("a key entry must have an empty contract");
        this.compare(obj, chain);
        this.keyCount++;
        this.keyHead = { seq, leaf };
        this.lastKind = kind;
        return;  // the hand-over itself: rotate(), once the signatures are checked
      }
      if (kind === "state") {
        if (obj.format !== 2) fail(`format ${String(obj.format).slice(0, 20)} is not a format this verifier knows`);
        if (this.lastKind === "state") fail("a state entry may not follow another state entry");
        fields();
        if (obj.contract !== "") fail("a state entry must have an empty contract");
        const expect = { funds: this.funds.size, heads: b64encode(await this.headsRoot()), keys: this.keyCount };
        if (this.keyHead) Object.assign(expect, { key_seq: this.keyHead.seq, key_hash: b64encode(this.keyHead.leaf) });
        this.compare(obj, Object.assign(expect, chain));
        if (this.since === null) this.since = seq;
        this.stateHead = { seq, leaf };
        this.lastKind = kind;
        return;
      }
      // liquidation
      const fund = this.funds.get(obj.contract);
      if (!fund) fail(`unknown contract ${String(obj.contract).slice(0, 40)}`);
      if (typeof obj.id !== "string" || obj.id.length > 128 || !PRINTABLE_ID.test(obj.id)) fail("bad liquidation id");
      const idKey = obj.contract + "\u0000" + obj.id;
      if (this.seen.has(idKey)) fail(`liquidation ${obj.id} of ${obj.contract} is recorded twice`);
      if (this.oldIds && this.oldIds.has(hex(idHash(idKey)))) throw new NeedFull();  // perhaps one the fund had before
      if (obj.side !== "long" && obj.side !== "short") fail("side must be long or short");
      const q = positive(obj.qty, "qty");
      const b = positive(obj.bankruptcy_price, "bankruptcy_price");
      const f = positive(obj.fill_price, "fill_price");
      if ("mark_price" in obj) positive(obj.mark_price, "mark_price");
      const lots = fund.lot ? lotsIn(q, fund.lot) : null;
      if (fund.lot && lots === null) fail(`qty ${obj.qty} is not a multiple of the lot size ${lotText(fund)}`);
      let delta = movementUnits(fund.type, obj.side, q, fund.mult, b, f, fund.scale);
      // docs/FORMAT.md, "The minimum ADL": a lot contract's fund that cannot pay closes lots by ADL
      const needsAdl = Boolean(fund.lot) && delta < 0n && -delta > fund.balance;
      const given = ADL_FIELDS.filter((k) => k in obj);
      const holds = amountStr(fund.balance, fund.scale), shortfall = amountStr(delta < 0n ? -delta : 0n, fund.scale);
      if (!fund.lot && given.length) fail(`adl_qty, queue_root and queue_size need a lot contract: ${obj.contract} has no lot size`);
      if (fund.lot && !needsAdl && given.length) fail(`ADL when the fund could still pay: it holds ${holds} and the shortfall is ${shortfall}`);
      let paid = 0n, adl = 0n, balance, adlLots = null, marketLots = null;
      if (needsAdl) {
        // q_m: the largest number of lots the balance covers, at one lot's exact shortfall
        const [num1, den1] = movementFraction(fund.type, obj.side, fund.lot, fund.mult, b, f);
        const covered = floorDiv(fund.balance * den1, -num1 * pow10(fund.scale));
        marketLots = covered < lots ? covered : lots;
        adlLots = lots - marketLots;
        const minimum = decimalStr(adlLots * fund.lot[0], fund.lot[1]);
        if (!("adl_qty" in obj)) {
          fail(`the fund holds ${holds} and the shortfall is ${shortfall}: ADL of ${minimum} is needed ` +
            "(adl_qty, queue_root, queue_size and the adl records)");
        }
        const c = compareDecimals(positive(obj.adl_qty, "adl_qty"), [adlLots * fund.lot[0], fund.lot[1]]);
        if (c !== 0) {
          fail(c > 0 ? `adl_qty ${obj.adl_qty} is more than the minimum ${minimum} the balance requires`
            : `adl_qty ${obj.adl_qty} is less than the ${minimum} the balance requires`);
        }
        if (typeof obj.queue_root !== "string" || !HASH_B64.test(obj.queue_root)) {
          fail(`queue_root is not the base64 of 32 bytes: ${String(obj.queue_root).slice(0, 50)}`);
        }
        if (!(Number.isSafeInteger(obj.queue_size) && obj.queue_size >= 1 && obj.queue_size <= MAX_QUEUE)) {
          fail(`queue_size must be an integer from 1 to ${MAX_QUEUE}`);
        }
        want = [...want, ...ADL_FIELDS].sort();
      }
      fields();
      if (needsAdl) {
        const shortfallAll = -delta;
        delta = movementUnits(fund.type, obj.side, [marketLots * fund.lot[0], fund.lot[1]], fund.mult, b, f, fund.scale);
        paid = -delta;
        adl = shortfallAll - paid;
        balance = fund.balance - paid;
      } else if (delta >= 0n) {
        balance = fund.balance + delta;
      } else {
        paid = -delta < fund.balance ? -delta : fund.balance;
        adl = -delta - paid;
        balance = fund.balance - paid;
      }
      const expect = { delta, paid, adl, balance };
      for (const k of ["delta", "paid", "adl", "balance"]) {
        const s = amountStr(expect[k], fund.scale);
        if (obj[k] !== s) fail(`${k} is ${String(obj[k]).slice(0, 40)} but the rules give ${s}`);
      }
      this.compare(obj, chain);
      if (needsAdl) {
        this.pending = { event: seq, last: seq, sym: obj.contract, id: obj.id, side: obj.side === "long" ? "short" : "long",
          price: obj.bankruptcy_price, lot: fund.lot, need: adlLots, adlQty: obj.adl_qty, closed: 0n, count: 0,
          queueRoot: b64decode(obj.queue_root, "queue_root"), queueSize: obj.queue_size, leaves: [], commitments: new Set(),
          previous: null };
      }
      fund.balance = balance;
      Object.assign(fund, { seq, leaf, entries: fund.entries + 1, headLeaf: null });
      this.seen.add(idKey);
      if (this.newIds) this.newIds.push(idHash(idKey));
      this.lastKind = kind;
    }

    /** An ``adl`` entry (docs/FORMAT.md, "Auto-deleveraging"): at the seq
     *  after its event's liquidation or previous adl entry, its positions
     *  the next ranks of the queue, and on the event's last entry the queue
     *  shown against queue_root. */
    adlEntry(obj, seq, leaf) {
      const p = this.pending;
      if (this.since === null) fail("unknown entry kind adl in format 1: adl entries exist from the first state entry on");
      if (!p) fail("an adl record must follow the ADL liquidation it allocates, or its previous adl record");
      if (seq !== p.last + 1) fail(`an ADL liquidation of ${p.sym} is not followed at once by its allocation`);
      if (obj.contract !== p.sym || obj.liquidation !== p.id) fail(`an adl record must allocate ${describe(p)}, the liquidation before it`);
      const fund = this.funds.get(p.sym);
      const chain = this.link(fund);
      if (typeof obj.positions !== "string" || !obj.positions) fail("positions must be a non-empty string");
      const parts = obj.positions.split(",");
      if (parts.length > MAX_POSITIONS) fail(`more than ${MAX_POSITIONS} positions in one adl entry`);
      // checked on copies: the event changes only once the whole entry passed
      let closed = p.closed, count = p.count, previous = p.previous;
      const seen = new Set(), leaves = [];
      const inOrder = (pos, rank) => {
        if (p.commitments.has(pos.key) || seen.has(pos.key)) fail(`position ${rank}: its commitment appears twice in the event`);
        if (previous && !ranksAfter(pos, previous)) {
          fail(`position ${rank} (score ${pos.scoreText.slice(0, 40)}) ranks above position ${rank - 1} ` +
            `(score ${previous.scoreText.slice(0, 40)}): out of queue order`);
        }
      };
      parts.forEach((text, i) => {
        const rank = count;
        const pos = parsePosition(text, true, p.lot, `position ${rank}`);
        inOrder(pos, rank);
        if (previous && previous.qtyLots !== previous.sizeLots) {
          fail(`position ${rank - 1} is closed for ${previous.qtyText} of ${previous.sizeText}, yet the allocation ` +
            "goes on: the top of the queue is closed whole first");
        }
        closed += pos.qtyLots;
        if (closed > p.need) fail(`the positions add up to more than adl_qty at position ${rank}`);
        if (closed === p.need && i !== parts.length - 1) fail(`the positions reach adl_qty at position ${rank}, before the last of the entry`);
        seen.add(pos.key);
        leaves.push(pos.leaf);
        previous = pos;
        count++;
      });
      const last = closed === p.need;
      if (count > p.queueSize) fail(`more positions closed than the queue's ${p.queueSize}`);
      const want = [...FIELDS.adl, ...Object.keys(chain)];
      const shown = [...p.leaves, ...leaves];
      if (last) {
        if (count < p.queueSize) {
          if (!("next" in obj)) fail(`the queue has ${p.queueSize} positions and ${count} are closed: next must give the first one spared`);
          if (typeof obj.next !== "string") fail("next is not a string");
          const next = parsePosition(obj.next, false, p.lot, "next");
          inOrder(next, count);
          shown.push(next.leaf);
          want.push("next");
        } else if ("next" in obj) {
          fail("next after the whole queue is closed");
        }
        const root = mthSync(shown.map((l) => leafHashSync(enc.encode(l))));
        if (shown.length < p.queueSize) {
          if (typeof obj.queue_proof !== "string" || !obj.queue_proof) {
            fail(`queue_proof is needed: ${shown.length} of the queue's ${p.queueSize} positions are shown`);
          }
          const proof = obj.queue_proof.split(" ");
          if (proof.length > MAX_QUEUE_PROOF) fail(`more than ${MAX_QUEUE_PROOF} hashes in queue_proof`);
          const hashes = proof.map((h) => {
            if (!HASH_B64.test(h)) fail(`a queue_proof hash is not the base64 of 32 bytes: ${h.slice(0, 50)}`);
            return b64decode(h, "a queue_proof hash");
          });
          if (!consistent(shown.length, p.queueSize, root, p.queueRoot, hashes)) {
            fail(`queue_proof does not show the ${shown.length} positions shown to be the top of the queue of queue_root`);
          }
          want.push("queue_proof");
        } else {
          if ("queue_proof" in obj) fail("queue_proof with the whole queue shown");
          if (!equal(root, p.queueRoot)) fail("the positions shown are the whole queue, and their root is not queue_root");
        }
      } else if ("next" in obj || "queue_proof" in obj) {
        fail("next and queue_proof belong on the event's last adl entry only");
      }
      fieldSet(obj, want);
      this.compare(obj, Object.assign({ contract: p.sym, liquidation: p.id, event: p.event, side: p.side, price: p.price }, chain));
      Object.assign(p, { closed, count, previous, last: seq });
      for (const k of seen) p.commitments.add(k);
      p.leaves.push(...leaves);
      Object.assign(fund, { seq, leaf, entries: fund.entries + 1, headLeaf: null });
      if (last) this.pending = null;
      this.lastKind = "adl";
    }

    /** Each field of ``expect`` as the rules give it, in order. */
    compare(obj, expect) {
      for (const [k, v] of Object.entries(expect)) {
        if (obj[k] !== v) fail(`${k} is ${String(obj[k]).slice(0, 60)} but the rules give ${String(v).slice(0, 60)}`);
      }
    }

    /** The hand-over of a key entry whose signatures verified. */
    async rotate(obj, seq, origin) {
      const k = await parseVkey(String(obj.vkey), "the new key");
      if (k.name !== origin) fail("the new key is not named after the log");
      if (this.keys.some((e) => equal(e.key.pub, k.pub))) fail("a key entry may not bring back a key already used");
      this.keys.push({ start: seq + 1, key: k });
    }
  }

  /** Parse an entry's note; the signature checks it needs (run by the caller):
   *  ``verify(key, signature, text)`` for each, verifySig's promise by default. */
  async function openEntry(data, seq, book, origin, verify = verifySig, parsed = null) {
    if (data.length > MAX_ENTRY_BYTES) fail(`entry ${seq} is over ${MAX_ENTRY_BYTES} bytes`);
    const n = parsed ? parsed.n : splitNote(data, `entry ${seq}`);
    if (!n.textStr.endsWith("\n") || n.textStr.indexOf("\n") !== n.textStr.length - 1) fail(`entry ${seq}: text is not one line`);
    let obj = parsed ? parsed.obj : null;
    if (!parsed) try { obj = JSON.parse(n.textStr); } catch (e) { fail(`entry ${seq}: broken JSON`); }
    if (obj === null || typeof obj !== "object" || Array.isArray(obj)) fail(`entry ${seq}: not a JSON object`);
    const signers = [book.keyAt(seq)];
    if (obj.kind === "key") signers.push(await parseVkey(String(obj.vkey), `entry ${seq}: the new key`));
    if (n.sigs.length !== signers.length) fail(`entry ${seq}: ${n.sigs.length} signatures, expected ${signers.length}`);
    const checks = n.sigs.map((s, i) => {
      const k = signers[i];
      if (s.name !== k.name || !equal(s.kid, k.kid)) fail(`entry ${seq}: signed by a key that may not sign here (${s.name})`);
      return verify(k, s.sig, n.text, i);
    });
    // (the caller fails a non-canonical text with the rules, before the signatures)
    let isCanonical = false;
    try { isCanonical = canonical(obj) + "\n" === n.textStr; } catch (e) { if (!(e instanceof Failure)) throw e; }
    return { obj, checks, isCanonical, signers };
  }

  // --- return visits (docs/SITE.md, "Return visits"; publish/static/memory.js) -----------------

  /** A warning for a returning visitor: what this site shows now is not an
   *  extension of what this browser verified here before. */
  class MemoryWarning extends Failure {
    constructor(kind, msg) { super(msg); this.kind = kind; }
  }
  /** A liquidation id of the new entries may be one the fund had before
   *  (its remembered hash matches): settled by checking the whole fund. */
  class NeedFull extends Error {}
  const memory = window.FundledgerMemory || null;
  function idHash(idKey) { return sha256Sync(enc.encode(idKey)).subarray(0, 8); }
  const sizeText = (n) => `${n.toLocaleString("en-US")} entries`;

  /** The root of the first ``m`` leaves of the tree of ``tiles``, from its
   *  hash tiles, each authenticated up to the new root: the consistency
   *  proof of RFC 6962 (the subtrees of the old tree's compact range), read
   *  from tlog-tiles. */
  async function prefixRoot(tiles, m) {
    if (m === 0) return sha256Sync(new Uint8Array(0));
    if (!tiles.edge) tiles.edge = tiles.checkEdge();
    await tiles.edge;
    const roots = [];
    for (let b = 52; b >= 0; b--) {
      if (Math.floor(m / 2 ** b) % 2 === 0) continue;
      const start = Math.floor(m / 2 ** (b + 1)) * 2 ** (b + 1);
      const T = Math.floor(b / 8), j = b - 8 * T;
      const pos = start / 2 ** (8 * T);
      const index = Math.floor(pos / TILE_WIDTH), off = pos % TILE_WIDTH;
      const key = `${T}/${index}`;
      const hashes = tiles.tiles.has(key) ? tiles.tiles.get(key) : await tiles.tile(T, index);
      roots.push(perfectRoot(hashes.slice(off, off + 2 ** j)));
    }
    let r = roots[roots.length - 1];
    for (let i = roots.length - 2; i >= 0; i--) r = nodeHashSync(roots[i], r);
    return r;
  }

  /** Why the tree of (size, root) remembered is not a prefix of ``cp``'s, or null. */
  async function inconsistency(tiles, cp, size, root) {
    if (size > cp.size) return "rollback";
    if (size === cp.size) return root === b64encode(cp.root) ? null : "fork";
    return b64encode(await prefixRoot(tiles, size)) === root ? null : "fork";
  }
  const WHY = {
    rollback: "this site now shows a smaller log than the one this browser verified here before: the log went back (a rollback)",
    fork: "this site now shows a log that does not extend the one this browser verified here before: two different histories (a fork)",
    key: "this site now publishes another log key than the one this browser verified this log with before",
  };
  function warning(kind, old, cp) {
    return new MemoryWarning(kind, `${WHY[kind]}. Verified here before: ${sizeText(old.size)}, root ${old.root}. ` +
      `Shown now: ${sizeText(cp.size)}, root ${b64encode(cp.root)}. Do not rely on what this site shows now.`);
  }

  /** The checkpoint this browser verified here before, against ``cp`` (its
   *  tree read through ``tiles``): {old, damaged}; a MemoryWarning if ``cp``
   *  does not extend it. */
  async function checkMemory(anchor, cp, tiles) {
    const r = memory ? memory.checkpoint(cp.origin) : { status: "none" };
    if (r.status !== "ok") return { old: null, damaged: r.status === "damaged" };
    const old = r.value;
    if (old.vkey !== anchor.vkey) throw warning("key", old, cp);
    const kind = cp.size === 0 && old.size > 0 ? "rollback" : cp.size === 0 ? null : await inconsistency(tiles, cp, old.size, old.root);
    if (kind) throw warning(kind, old, cp);
    return { old, damaged: false };
  }
  function rememberCheckpoint(anchor, cp, cpBytes) {
    if (!memory || cpBytes.length > 16384) return false;
    return memory.saveCheckpoint(cp.origin, { size: cp.size, root: b64encode(cp.root), note: decode(cpBytes, "the checkpoint"), vkey: anchor.vkey });
  }

  // --- the light check of one fund (docs/FORMAT.md, "The light check of one fund") -----

  /** Leaf hashes of the checkpointed tree, authenticated through the hash
   *  tiles as ledger/tlog/tiles.py's TileHashReader does: the right-edge
   *  tiles hash up to the root, every full tile to its entry in its parent.
   *  Each tile is fetched once. */
  class TreeTiles {
    constructor(size, root) {
      this.size = size; this.root = root; this.tiles = new Map(); this.loading = new Map(); this.edge = null; this.fetched = 0;
    }
    width(L, index) {
      const count = Math.floor(this.size / 2 ** (8 * L));
      return Math.max(0, Math.min(TILE_WIDTH, count - index * TILE_WIDTH));
    }
    async fetch(L, index) {
      const w = this.width(L, index);
      if (w === 0) fail(`tile ${L}/${index} is not in the tree of size ${this.size}`);
      const path = tilePath(L, index, w);
      const data = await get(path);
      this.fetched++;
      if (data.length !== 32 * w) fail(`${path} does not hold ${w} hashes`);
      const out = [];
      for (let i = 0; i < w; i++) out.push(data.subarray(32 * i, 32 * i + 32));
      return out;
    }
    async checkEdge() {
      const roots = [];
      for (let b = 52; b >= 0; b--) {
        if (Math.floor(this.size / 2 ** b) % 2 === 0) continue;
        const start = Math.floor(this.size / 2 ** (b + 1)) * 2 ** (b + 1);
        const T = Math.floor(b / 8), j = b - 8 * T;
        const pos = start / 2 ** (8 * T);
        const index = Math.floor(pos / TILE_WIDTH), off = pos % TILE_WIDTH;
        const key = `${T}/${index}`;
        if (!this.tiles.has(key)) this.tiles.set(key, await this.fetch(T, index));
        roots.push(perfectRoot(this.tiles.get(key).slice(off, off + 2 ** j)));
      }
      let r = roots[roots.length - 1];
      for (let i = roots.length - 2; i >= 0; i--) r = nodeHashSync(roots[i], r);
      if (!equal(r, this.root)) fail(`the hash tiles do not hash up to the checkpoint's root`);
    }
    /** Tile (L, index), checked; fetched once even when asked for twice at a time. */
    tile(L, index) {
      const key = `${L}/${index}`;
      if (this.tiles.has(key)) return Promise.resolve(this.tiles.get(key));
      if (!this.loading.has(key)) this.loading.set(key, this.load(L, index, key));
      return this.loading.get(key);
    }
    async load(L, index, key) {
      if (this.width(L, index) < TILE_WIDTH) fail(`tile ${key} is not an edge tile`);
      const hashes = await this.fetch(L, index);
      const parent = await this.tile(L + 1, Math.floor(index / TILE_WIDTH));
      if (!equal(perfectRoot(hashes), parent[index % TILE_WIDTH])) {
        fail(`${tilePath(L, index, TILE_WIDTH)} does not match its parent tile`);
      }
      this.tiles.set(key, hashes);
      return hashes;
    }
    /** Each [seq, bytes, leaf hash] is the leaf at seq of the checkpointed tree. */
    async authenticate(items) {
      if (!this.edge) this.edge = this.checkEdge();
      await this.edge;
      for (const [seq] of items) {
        if (!(seq >= 0 && seq < this.size)) fail(`an entry claims seq ${seq}, outside the tree of size ${this.size}`);
      }
      const wanted = [...new Set(items.map(([seq]) => Math.floor(seq / TILE_WIDTH)))];
      await Promise.all(wanted.map((i) => this.tile(0, i)));  // fetched side by side
      for (const [seq, , leaf] of items) {
        const leaves = await this.tile(0, Math.floor(seq / TILE_WIDTH));
        if (!equal(leaf, leaves[seq % TILE_WIDTH])) {
          fail(`entry ${seq}: it is not the one the checkpointed tree holds at its seq`);
        }
      }
    }
  }
  /** TreeTiles.authenticate through a bundle's tile paths: each entry's
   *  leaf hash and its 8 siblings give its level-0 tile's root, which must be
   *  entry (seq >> 8) % 256 of level-1 tile seq >> 16 (no level-0 tile read). */
  TreeTiles.prototype.authenticatePaths = async function (items, paths, where) {
    if (!this.edge) this.edge = this.checkEdge();
    await this.edge;
    if (paths.length !== items.length * 256) fail(`${where} does not hold ${items.length} tile paths`);
    for (const [seq] of items) {
      if (!(seq >= 0 && seq < this.size)) fail(`an entry claims seq ${seq}, outside the tree of size ${this.size}`);
    }
    const wanted = [...new Set(items.map(([seq]) => Math.floor(seq / 65536)))];
    await Promise.all(wanted.map((i) => this.tile(1, i)));
    for (let k = 0; k < items.length; k++) {
      const [seq, , leaf] = items[k];
      let h = leaf;
      for (let l = 0; l < 8; l++) {
        const sibling = paths.subarray(256 * k + 32 * l, 256 * k + 32 * l + 32);
        h = Math.floor(seq / 2 ** l) % 2 ? nodeHashSync(sibling, h) : nodeHashSync(h, sibling);
      }
      const parent = await this.tile(1, Math.floor(seq / 65536));
      if (!equal(h, parent[Math.floor(seq / 256) % 256])) {
        fail(`entry ${seq}: it is not the one the checkpointed tree holds at its seq (through ${where})`);
      }
    }
  };
  function perfectRoot(hashes) {
    let level = hashes;
    while (level.length > 1) {
      const up = [];
      for (let k = 0; k < level.length; k += 2) up.push(nodeHashSync(level[k], level[k + 1]));
      level = up;
    }
    return level[0];
  }
  /** RFC 9162 (2.1.4.2): ``proof`` is a consistency proof from the tree of
   *  ``first`` leaves with root ``firstHash`` to the tree of ``second``
   *  leaves with root ``secondHash`` (0 < first <= second). */
  function consistent(first, second, firstHash, secondHash, proof) {
    if (!(first > 0 && first <= second)) return false;
    if (first === second) return proof.length === 0 && equal(firstHash, secondHash);
    if (proof.length === 0) return false;
    const path = (first & (first - 1)) === 0 ? [firstHash, ...proof] : proof;
    let fn = first - 1, sn = second - 1;
    while (fn & 1) { fn >>>= 1; sn >>>= 1; }
    let fr = path[0], sr = path[0];
    for (const c of path.slice(1)) {
      if (sn === 0) return false;
      if ((fn & 1) || fn === sn) {
        fr = nodeHashSync(c, fr);
        sr = nodeHashSync(c, sr);
        if (!(fn & 1)) while (!(fn & 1) && fn !== 0) { fn >>>= 1; sn >>>= 1; }
      } else {
        sr = nodeHashSync(sr, c);
      }
      fn >>>= 1; sn >>>= 1;
    }
    return sn === 0 && equal(fr, firstHash) && equal(sr, secondHash);
  }
  /** mth() of the heads, synchronous. */
  function mthSync(leaves) {
    if (leaves.length === 0) return sha256Sync(new Uint8Array(0));
    if (leaves.length === 1) return leaves[0];
    let k = 1;
    while (k * 2 < leaves.length) k *= 2;
    return nodeHashSync(mthSync(leaves.slice(0, k)), mthSync(leaves.slice(k)));
  }

  /** An entry's note split and its text parsed: {n, obj}. */
  function parseNote(data, what) {
    const n = splitNote(data, what);
    let obj;
    try { obj = JSON.parse(n.textStr); } catch (e) { fail(`${what}: broken JSON`); }
    if (obj === null || typeof obj !== "object" || Array.isArray(obj)) fail(`${what}: not a JSON object`);
    return { n, obj };
  }
  function textObject(data, what) { return parseNote(data, what).obj; }

  /** The ``length`` entries of chain ``name``: [seq, bytes, leaf hash,
   *  parsed], seqs strictly increasing, each authenticated, a bundle at a
   *  time, the next bundle fetched and prepared meanwhile. With ``keys`` (a
   *  Book whose keys are all known), each entry's signatures by the key in
   *  force at its seq are checked in the workers with its bundle's leaf
   *  hashes (pool.bundle), and ``parsed.verify`` gives their verdicts to
   *  openEntry; without, the leaves are hashed here and openEntry asks. */
  const AHEAD = 4;  // chain bundles fetched ahead of the one being checked
  async function* chainEntries(tiles, name, length, from = 0, keys = null) {
    let last = -1;
    const where = (index) => {
      const width = Math.min(TILE_WIDTH, length - index * TILE_WIDTH);
      return [width, `chain/${name}/${indexPath(index)}${width === TILE_WIDTH ? "" : ".p/" + width}`];
    };
    const files = new Prefetch();  // the bundles, AHEAD ahead of the one being prepared
    const prepare = async (index) => {
      const [width, path] = where(index);
      for (let i = index; i < index + AHEAD && i * TILE_WIDTH < length; i++) files.ahead(where(i)[1]);
      const data = await files.take(path);
      const { items, error } = splitBundle(data, width, 0);
      if (error) fail(`${path}: the bundle is not ${width} entries`);
      const jobs = [];
      const batch = items.map((data, i) => {
        const parsed = parseNote(data, `chain ${name}`);
        const seq = parsed.obj.seq;
        if (!Number.isSafeInteger(seq) || seq <= last) fail(`chain ${name} is not in increasing seq order`);
        last = seq;
        if (keys && index * TILE_WIDTH + i >= from) precollect(parsed, keys.keyAt(seq), jobs);
        return [seq, data, null, parsed];
      });
      // the bundle's tile paths (docs/FORMAT.md) exist once all its entries lie in full tiles
      const inFullTiles = batch.length > 0 && batch[batch.length - 1][0] < tiles.size - tiles.size % TILE_WIDTH;
      const pathsPromise = inFullTiles ? get(path + ".paths", { optional: true }) : null;
      if (pathsPromise) pathsPromise.catch(() => {});
      const work = keys ? await pool.bundle(data, items, jobs) : null;
      batch.forEach((item, i) => {
        item[2] = work ? work.leaves[i] : leafHashSync(item[1]);
        if (item[3].key) item[3].verify = verdicts(item[3], work.oks);
      });
      const pathData = inFullTiles ? await pathsPromise : null;
      if (pathData) await tiles.authenticatePaths(batch, pathData, path + ".paths");
      else await tiles.authenticate(batch);
      return batch;
    };
    const start = Math.floor(from / TILE_WIDTH);
    let next = length > from ? prepare(start) : null;
    for (let index = start; index * TILE_WIDTH < length; index++) {
      const batch = await next;
      next = (index + 1) * TILE_WIDTH < length ? prepare(index + 1) : null;  // the next one meanwhile
      if (next) next.catch(() => {});
      yield* batch.slice(Math.max(0, from - index * TILE_WIDTH));
    }
  }
  /** Send a parsed entry's first signature, by ``key``, the key in force at
   *  its seq, to the workers: ``parsed.job`` is its index in ``jobs``, or -1
   *  where openEntry refuses it before asking (another name or key id, or
   *  not the shape of a signature). */
  function precollect(parsed, key, jobs) {
    const s = parsed.n.sigs[0];
    parsed.key = key;
    parsed.job = s && s.name === key.name && equal(s.kid, key.kid) && sigShapeOk(s.sig) ? jobs.push([key, s.sig, parsed.n.text]) - 1 : -1;
  }
  /** openEntry's ``verify`` for a precollected entry: the workers' verdict
   *  for the signature sent; verifySig for any other. */
  function verdicts(parsed, oks) {
    return (k, sig, text, i) => (i === 0 && parsed.job >= 0 && k === parsed.key ? oks[parsed.job] : verifySig(k, sig, text));
  }

  /** Open one chain entry and check it by the rules (``book.apply``); its
   *  JSON and the promise of its signatures' verdict (for the caller to await). */
  async function openChainEntry(book, data, seq, origin, since, leaf, parsed = null) {
    const verify = parsed && parsed.verify ? parsed.verify : verifySig;
    const { obj, checks, isCanonical } = await openEntry(data, seq, book, origin, verify, parsed);
    book.since = seq > since ? since : null;
    try {
      checkTime(obj.time);
      b64decode(String(obj.prev), "prev");
      await book.apply(obj, seq, origin, leaf);
      if (!isCanonical) fail("not in canonical JSON");
    } catch (e) {
      if (e instanceof Failure) fail(`entry ${seq}: ${e.message}`);
      throw e;
    }
    return { obj, signed: Promise.all(checks).then((oks) => oks.every(Boolean)) };
  }
  /** The signatures of [seq, promise] in seq order: the first bad one fails. */
  async function signaturesHold(pending) {
    const oks = await Promise.all(pending.map(([, p]) => p));
    oks.forEach((ok, i) => { if (!ok) fail(`entry ${pending[i][0]}: the signature is not valid`); });
  }
  async function checkChainEntry(book, data, seq, origin, since, leaf) {
    const { obj, signed } = await openChainEntry(book, data, seq, origin, since, leaf);
    await signaturesHold([[seq, signed]]);
    return obj;
  }

  /** A state entry at ``seq``: canonical, signed, its key commitment that of the key chain. */
  async function checkStateEntry(book, data, seq, origin, since, keyHeads) {
    const { obj, checks, isCanonical } = await openEntry(data, seq, book, origin);
    if (obj.kind !== "state" || obj.format !== 2 || obj.contract !== "") fail(`entry ${seq} is not a format-2 state entry`);
    const below = keyHeads.filter((h) => h.seq < seq);
    const want = [...FIELDS.state, ...(below.length ? KEY_FIELDS : []), ...(seq > since ? CHAIN_FIELDS : [])].sort();
    if (Object.keys(obj).sort().join(",") !== want.join(",")) fail(`entry ${seq}: the fields of a state entry are wrong`);
    if (!Number.isSafeInteger(obj.funds) || obj.funds < 0 || obj.keys !== below.length) fail(`entry ${seq}: the state entry's counts are wrong`);
    if (b64decode(String(obj.heads), "heads").length !== 32) fail(`entry ${seq}: heads is not a hash`);
    const last = below[below.length - 1];
    if (last && (obj.key_seq !== last.seq || obj.key_hash !== b64encode(last.leaf))) fail(`entry ${seq}: the state entry names another key entry`);
    if (seq > since && !(Number.isSafeInteger(obj.chain_seq) && obj.chain_seq >= since && obj.chain_seq < seq)) fail(`entry ${seq}: bad chain_seq`);
    if (!isCanonical) fail(`entry ${seq}: not in canonical JSON`);
    checkTime(obj.time);
    for (const ok of await Promise.all(checks)) if (!ok) fail(`entry ${seq}: the signature is not valid`);
    return obj;
  }

  /** The head line of fund ``index`` of ``count`` from the heads tiles under ``root``. */
  async function headFromTiles(root, count, index) {
    let height = 0;
    while (TILE_WIDTH ** (height + 1) < count) height++;
    let name = root;
    for (let L = height; L >= 0; L--) {
      let below = count;
      for (let i = 0; i < L; i++) below = Math.ceil(below / TILE_WIDTH);
      const tile = Math.floor(index / TILE_WIDTH ** (L + 1));
      const expected = Math.max(0, Math.min(TILE_WIDTH, below - tile * TILE_WIDTH));
      const data = await get(`heads/${L}/${hex(name)}`);
      const slot = Math.floor(index / TILE_WIDTH ** L) % TILE_WIDTH;
      let items = [];
      if (L === 0) {
        let pos = 0;
        while (pos < data.length) {
          const nl = data.indexOf(0x0a, pos);
          if (nl < 0) fail("a heads tile does not end with a newline");
          items.push(data.subarray(pos, nl + 1));
          pos = nl + 1;
        }
      } else {
        for (let i = 0; i + 32 <= data.length; i += 32) items.push(data.subarray(i, i + 32));
        if (data.length % 32) items = [];
      }
      if (items.length !== expected) fail(`heads tile ${hex(name)} holds ${items.length} items, not ${expected}`);
      const leaves = L === 0 ? items.map(leafHashSync) : items;
      if (!equal(mthSync(leaves), name)) fail(`heads tile ${hex(name)} does not hash to its name`);
      if (L === 0) return decode(items[slot], "a head line");
      name = items[slot];
    }
  }

  /** The key chain, the state entry (and the first one) and the checkpoint's signature. */
  async function checkKeysAndState(tiles, anchor, note, cp, since, entryAt) {
    const lastSeq = cp.size - 1;
    const last = await entryAt(lastSeq);
    const unsigned = textObject(last, `entry ${lastSeq}`);
    if (unsigned.kind !== "state" || !Number.isSafeInteger(unsigned.keys)) {
      fail(`entry ${lastSeq}: a checkpoint of a format-2 log must end with a state entry`);
    }
    const book = new Book(anchor);
    const keyHeads = [];
    for await (const [seq, data, leaf] of chainEntries(tiles, "_key", Math.min(unsigned.keys, cp.size))) {
      if (seq >= lastSeq) fail(`entry ${seq}: the key chain reaches past the state entry`);
      const obj = await checkChainEntry(book, data, seq, anchor.name, since, leaf);
      if (obj.kind !== "key") fail(`entry ${seq}: an entry of the key chain is not a key entry`);
      await book.rotate(obj, seq, anchor.name);
      keyHeads.push({ seq, leaf });
    }
    const state = await checkStateEntry(book, last, lastSeq, anchor.name, since, keyHeads);
    if (since < lastSeq) await checkStateEntry(book, await entryAt(since), since, anchor.name, since, keyHeads);
    const k = book.keyAt(cp.size);
    const sig = note.sigs.find((s) => s.name === k.name && equal(s.kid, k.kid));
    if (!sig || !(await verifySig(k, sig.sig, note.text))) fail("the checkpoint is not signed by the log key in force at its size");
    return { book, state };
  }

  /** The fund's head at the checkpoint, from /funds and the heads tiles. */
  async function fundHead(symbol, state, size) {
    const names = decode(await get("funds"), "/funds").split("\n");
    if (names.pop() !== "" || names.length !== state.funds) fail(`/funds does not list the ${state.funds} funds of the state entry`);
    const index = names.indexOf(symbol);
    if (index < 0) fail(`${symbol} is not among the funds of this log`);
    const line = await headFromTiles(b64decode(state.heads, "heads"), state.funds, index);
    let head;
    try { head = JSON.parse(line); } catch (e) { fail(`the head of ${symbol} is not JSON`); }
    if (!head || typeof head !== "object" || Object.keys(head).sort().join(",") !== "balance,contract,entries,hash,seq" ||
        canonical(head) + "\n" !== line || head.contract !== symbol) {
      fail(`the head at fund index ${index} is not a canonical head line of ${symbol}`);
    }
    if (!Number.isSafeInteger(head.entries) || head.entries < 1 || head.entries > size) fail(`the head of ${symbol} has a bad entry count`);
    return head;
  }

  /** The fund state this browser verified before, if it is usable: checked
   *  to be in a prefix of the new tree, and not newer than the new head (a
   *  MemoryWarning otherwise). null: check the whole fund. */
  async function priorFund(symbol, cp, tiles, head) {
    const r = memory ? memory.fund(cp.origin, symbol) : { status: "none" };
    if (r.status !== "ok") return { prior: null, damaged: r.status === "damaged" };
    const p = r.value;
    const kind = await inconsistency(tiles, cp, p.size, p.root);
    if (kind) throw warning(kind, p, cp);
    const ids = b64decode(p.ids, "the remembered ids");
    const units = /^[0-9]+(\.[0-9]+)?$/.test(p.balance) ? BigInt(p.balance.replace(".", "")) : -1n;
    if (ids.length % 8 || units < 0n || amountStr(units, p.scale) !== p.balance) return { prior: null, damaged: true };
    if (head.seq < p.seq || head.entries < p.entries) {
      throw new MemoryWarning("stale", `the head of ${symbol} in the new checkpoint (entry #${head.seq}, ${head.entries} entries, balance ${head.balance}) ` +
        `is older than the one this browser verified here before (entry #${p.seq}, ${p.entries} entries, balance ${p.balance}, ` +
        `in the log of ${sizeText(p.size)}). Do not rely on this fund's balance as this site shows it now.`);
    }
    const old = new Set();
    for (let i = 0; i < ids.length; i += 8) old.add(hex(ids.subarray(i, i + 8)));
    return { prior: Object.assign({}, p, { units, idBytes: ids, idSet: old }), damaged: false };
  }
  function notThroughPrior(symbol, p) {
    return new MemoryWarning("stale", `the chain of ${symbol} in the new checkpoint does not pass through the head this browser verified ` +
      `here before (entry #${p.seq}, in the log of ${sizeText(p.size)}): its history was rewritten. Do not rely on this fund's balance as this site shows it now.`);
  }
  /** The fund's book set to the remembered state, to go on from there. */
  function resume(fundBook, symbol, p) {
    fundBook.funds.set(symbol, { scale: p.scale, type: p.type, mult: positive(p.multiplier, "the remembered multiplier"), currency: p.currency,
      balance: p.units, seq: p.seq, leaf: b64decode(p.hash, "the remembered head"), entries: p.entries, headLeaf: null,
      lot: p.lot ? positive(p.lot, "the remembered lot") : null });
    fundBook.oldIds = p.idSet;
  }
  function rememberFund(cp, symbol, f, ids) {
    if (!memory) return false;
    return memory.saveFund(cp.origin, symbol, { size: cp.size, root: b64encode(cp.root), seq: f.seq, hash: b64encode(f.leaf), entries: f.entries,
      balance: amountStr(f.balance, f.scale), scale: f.scale, type: f.type, multiplier: amountStr(f.mult[0], f.mult[1]),
      currency: f.currency, ids: b64encode(ids), ...(f.lot ? { lot: lotText(f) } : {}) });
  }

  /** The fund's chain from entry ``from`` to its head, by the rules, from ``fundBook``'s state. */
  async function walkChain(ctx, fundBook, from, onProgress) {
    const { tiles, symbol, head, cp, anchor, since, prior } = ctx;
    let count = from, checked = 0;
    const pending = [];  // [seq, signatures' verdict] of the entries not yet settled
    for await (const [seq, data, leaf, parsed] of chainEntries(tiles, symbol, head.entries, from, fundBook)) {
      if (prior && count === prior.entries - 1) {  // the head this browser verified before
        if (seq !== prior.seq || b64encode(leaf) !== prior.hash) throw notThroughPrior(symbol, prior);
        count++;
        continue;
      }
      // a fund's chain: its contract entry, then liquidations and the adl entries of its ADL events
      const kinds = count === 0 ? ["contract"] : fundBook.pending ? ["adl"] : ["liquidation", "adl"];
      if (seq >= cp.size - 1) fail(`entry ${seq}: the chain of ${symbol} reaches past the state entry`);
      const obj = parsed.obj;
      if (!kinds.includes(obj.kind) || obj.contract !== symbol) {
        fail(`entry ${seq}: entry ${count} of the chain of ${symbol} is not a ${kinds.join(" or ")} entry of ${symbol}`);
      }
      let opened;
      try {
        opened = await openChainEntry(fundBook, data, seq, anchor.name, since, leaf, parsed);
      } catch (e) {
        await signaturesHold(pending);  // an earlier bad signature is named first
        throw e;
      }
      pending.push([seq, opened.signed]);
      // the signatures are checked in the workers meanwhile; at most 8 bundles' in flight
      if (pending.length >= 8 * TILE_WIDTH) await signaturesHold(pending.splice(0, TILE_WIDTH));
      count++;
      onProgress(++checked, head.entries - (prior ? prior.entries : 0));
    }
    await signaturesHold(pending);
    return checked;
  }

  /** The light check of fund ``symbol`` against this site's /vkey; from the
   *  fund state this browser verified before, if any and ``useMemory``. */
  async function checkFund(symbol, onProgress, useMemory = true) {
    const anchor = await parseVkey(decode(await get("vkey"), "/vkey").trim(), "/vkey");
    const cpBytes = await get("checkpoint", { optional: true });
    if (cpBytes === null) fail("this site publishes no signed checkpoint yet");
    const note = splitNote(cpBytes, "the checkpoint");
    const cp = parseCheckpoint(note.textStr);
    if (cp.origin !== anchor.name) fail(`the checkpoint is for ${cp.origin}, not ${anchor.name}`);
    if (cp.size === 0) fail("the checkpoint is of the empty log");
    const sinceBytes = await get("since", { optional: true });
    if (sinceBytes === null) fail("this log is in format 1: one fund can be checked alone only in format 2 (check the whole log instead)");
    const sinceText = decode(sinceBytes, "/since");
    if (!/^(0|[1-9][0-9]{0,15})\n$/.test(sinceText) || Number(sinceText) >= cp.size) fail("/since is not a seq of this tree");
    const since = Number(sinceText);
    const tiles = new TreeTiles(cp.size, cp.root);
    const remembered = await checkMemory(anchor, cp, tiles);
    const entryAt = async (seq) => {
      const index = Math.floor(seq / TILE_WIDTH), w = Math.min(TILE_WIDTH, cp.size - index * TILE_WIDTH);
      const data = splitBundle(await get(tilePath(-1, index, w)), w, index * TILE_WIDTH).items[seq % TILE_WIDTH];
      if (!data) fail(`entry ${seq}: the entry bundle is truncated`);
      await tiles.authenticate([[seq, data, leafHashSync(data)]]);
      return data;
    };
    const { book, state } = await checkKeysAndState(tiles, anchor, note, cp, since, entryAt);
    const head = await fundHead(symbol, state, cp.size);
    const { prior, damaged } = useMemory ? await priorFund(symbol, cp, tiles, head) : { prior: null, damaged: false };
    try {
      return await fundFromHead({ anchor, note, cp, cpBytes, since, tiles, symbol, head, prior, book, remembered,
        damaged: damaged || remembered.damaged }, onProgress);
    } catch (e) {
      if (e instanceof NeedFull) return checkFund(symbol, onProgress, false);
      throw e;
    }
  }

  /** The walk of the fund's chain, its head, and what to remember. */
  async function fundFromHead(ctx, onProgress) {
    const { anchor, note, cp, cpBytes, symbol, head, prior, book } = ctx;
    const fundBook = new Book(anchor);
    fundBook.keys = book.keys;
    fundBook.newIds = [];
    if (prior) resume(fundBook, symbol, prior);
    const checked = await walkChain(ctx, fundBook, prior ? prior.entries - 1 : 0, onProgress);
    const f = fundBook.funds.get(symbol);
    if (!f) fail(`the chain of ${symbol} is empty`);
    if (fundBook.pending) fail(`the chain of ${symbol} ends inside the ADL event of ${describe(fundBook.pending)}`);
    if (f.seq !== head.seq || b64encode(f.leaf) !== head.hash) {
      if (prior && head.entries === prior.entries) throw notThroughPrior(symbol, prior);
      fail(`the chain of ${symbol} does not end at its head (entry ${head.seq})`);
    }
    const balance = amountStr(f.balance, f.scale);
    if (balance !== head.balance) fail(`the head of ${symbol} says balance ${head.balance}, its entries give ${balance}`);
    const cosigners = cosignerLines(note, anchor);
    const kept = rememberCheckpoint(anchor, cp, cpBytes) &&
      rememberFund(cp, symbol, f, concat(prior ? prior.idBytes : new Uint8Array(0), ...fundBook.newIds));
    return { size: cp.size, balance, currency: f.currency, entries: f.entries, checked, lastSeq: f.seq, keys: book.keys.length,
      cosigners, tiles: ctx.tiles.fetched, prior, damaged: ctx.damaged, kept, origin: cp.origin };
  }

  // a tlog-cosignature line's bytes after the key id: u64 timestamp || signature
  const COSIGNATURE_TYPES = new Map([[8 + 64, "Ed25519"], [8 + 2420, "ML-DSA-44"]]);
  /** The other signature lines of a checkpoint, once per name, each with the
   *  cosignature type its length suggests (null: neither). None is checked
   *  here: this page holds no witness keys, and WebCrypto has no ML-DSA. */
  function cosignerLines(note, anchor) {
    const seen = new Map();
    for (const s of note.sigs) {
      if (s.name !== anchor.name && !seen.has(s.name)) seen.set(s.name, COSIGNATURE_TYPES.get(s.sig.length) || null);
    }
    return [...seen].map(([name, algorithm]) => ({ name, algorithm, checked: false }));
  }
  /** What the fund check says of the cosignature lines: an ML-DSA-44 one is
   *  named as not checked in the browser, and no line counts as a witness. */
  function cosignersText(cosigners) {
    if (!cosigners.length) return "No witness cosigned this checkpoint: nobody but the operator vouches that no entry was left out of this fund's chain.";
    const named = cosigners.map((c) => c.algorithm === "ML-DSA-44" ? `${c.name} (not checked in the browser: ML-DSA-44)`
      : c.algorithm ? `${c.name} (${c.algorithm}, not checked)` : `${c.name} (not a cosignature this page knows)`);
    return `Other names on the checkpoint: ${named.join(", ")}. This page holds no witness keys and cannot check ML-DSA-44 at all, ` +
      "so it checked none of those cosignatures and counts none of them as a witness (fundledger verify --witness checks them); " +
      "none of them is known to replay the fund rules.";
  }

  /** What this browser remembers, said in ``node`` (a warning: ``alarm``). */
  function showMemory(node, text, alarm) {
    node.textContent = text;
    node.hidden = !text;
    node.className = alarm ? "memory alarm" : "memory";
    if (alarm) node.setAttribute("role", "alert"); else node.removeAttribute("role");
  }
  function fundMemoryText(r) {
    const parts = [];
    if (r.damaged) parts.push("What this browser remembered of this log was damaged: it was ignored and forgotten.");
    parts.push(r.kept ? `This browser now remembers this checkpoint (${sizeText(r.size)}) and this fund's head, to warn you if this site later shows an older or a different log, and to check only what is new next time.`
      : "This browser could not remember this checkpoint (storage is off or full): the next check starts from scratch and cannot warn of a rollback.");
    return parts.join(" ");
  }

  /** The "Check this fund" button of a contract page. */
  function initFundCheck(section) {
    const q = (id) => section.querySelector("#" + id);
    const button = q("fund-check-run"), status = q("fund-check-status"), verdict = q("fund-check-verdict");
    const said = q("fund-check-memory"), forget = q("fund-check-forget");
    button.hidden = false;
    forget.addEventListener("click", () => {
      const n = memory && section.dataset.logOrigin ? memory.forget(section.dataset.logOrigin) : 0;
      showMemory(said, `This browser forgot what it remembered of this log (${n} record${n === 1 ? "" : "s"}): the next check starts from scratch.`, false);
      forget.hidden = true;
    });
    button.addEventListener("click", async () => {
      button.disabled = true;
      bytesFetched = 0;
      const started = performance.now();
      verdict.className = "verdict running";
      verdict.textContent = "checking…";
      section.dataset.verdict = "running";
      try {
        if (!window.isSecureContext || !window.crypto || !crypto.subtle) fail("this page is not in a secure context (open it over HTTPS)");
        showMemory(said, "", false);
        const r = await checkFund(section.dataset.contract, (done, total) => {
          if (done % TILE_WIDTH === 0 || done === total) status.textContent = `Checked ${done.toLocaleString("en-US")} of ${total.toLocaleString("en-US")} entries of this fund · downloaded ${(bytesFetched / 1e6).toFixed(2)} MB`;
        });
        section.dataset.logOrigin = r.origin;
        showMemory(said, fundMemoryText(r), false);
        forget.hidden = !r.kept && !r.prior;
        const shown = section.dataset.balance, shownSize = Number(section.dataset.size);
        let page = "";
        if (shown && shownSize === r.size) {
          if (shown !== r.balance) fail(`this page shows ${shown} but the fund's signed head says ${r.balance}`);
          page = " This page shows the same balance.";
        } else if (shown) {
          page = ` This page shows the balance up to entry #${(shownSize - 1).toLocaleString("en-US")}; the checkpoint now covers ${r.size.toLocaleString("en-US")} entries.`;
        }
        const secs = ((performance.now() - started) / 1000).toFixed(1);
        verdict.className = "verdict ok";
        verdict.textContent = `checked: ${display(r.balance)} ${r.currency}`;
        status.textContent = (r.prior ? `Checked ${r.checked.toLocaleString("en-US")} new entries since your last visit at size ${r.prior.size.toLocaleString("en-US")}: ` +
          `this fund's chain from its new head back to the head this browser verified then (entry #${r.prior.seq.toLocaleString("en-US")}), ` +
          `and that the new checkpoint extends the one of then. The fund now has ${r.entries.toLocaleString("en-US")} entries, up to entry #${r.lastSeq.toLocaleString("en-US")}, `
          : `All ${r.entries.toLocaleString("en-US")} entries of this fund, up to entry #${r.lastSeq.toLocaleString("en-US")}, `) +
          `checked against the checkpoint of ${r.size.toLocaleString("en-US")} entries, following ${r.keys} log key${r.keys === 1 ? "" : "s"}: ` +
          `${(bytesFetched / 1e6).toFixed(2)} MB, ${r.tiles} hash tiles, ${secs} s.${page}`;
        const w = q("fund-check-witnesses");
        w.textContent = cosignersText(r.cosigners);
        w.dataset.cosignersChecked = String(r.cosigners.filter((c) => c.checked).length);
        section.dataset.verdict = "verified";
        section.dataset.checkedBalance = r.balance;
      } catch (e) {
        const reason = e instanceof Failure ? e.message : `unexpected error: ${e && e.message ? e.message : e}`;
        verdict.className = "verdict bad";
        if (e instanceof MemoryWarning) {
          verdict.textContent = "warning: not verified, see below";
          section.dataset.verdict = e.kind;
          status.textContent = "";
          showMemory(said, "Warning: " + e.message, true);
          forget.hidden = false;
        } else {
          verdict.textContent = "failed: " + reason;
          section.dataset.verdict = "failed";
        }
        if (!(e instanceof Failure)) console.error(e);
      } finally {
        button.disabled = false;
      }
    });
  }

  // --- the page --------------------------------------------------------------------------

  const app = document.getElementById("verify-app");
  if (!app) {
    const section = document.getElementById("fund-check");
    if (section) initFundCheck(section);
    return;
  }
  const el = (id) => document.getElementById(id);
  const verdict = el("verdict"), verdictText = el("verdict-text"), status = el("status"), progress = el("progress");
  const rerun = el("rerun");
  function step(name, state) {
    const li = document.querySelector(`#steps li[data-step="${name}"]`);
    if (li) li.className = state;
  }
  function setStatus(t) { status.textContent = t; }
  let lastPaint = 0;
  function paintProgress(done, total, force) {
    const now = performance.now();
    if (!force && now - lastPaint < 100) return false;
    lastPaint = now;
    progress.max = Math.max(total, 1);
    progress.value = done;
    setStatus(`Checked ${done.toLocaleString("en-US")} of ${total.toLocaleString("en-US")} entries · downloaded ${(bytesFetched / 1e6).toFixed(2)} MB`);
    return true;
  }
  const yieldToPage = () => new Promise((r) => setTimeout(r, 0));

  function pageRows() {
    return Array.from(document.querySelectorAll("#page-balances tbody tr")).map((tr) => ({
      tr, contract: tr.dataset.contract, balance: tr.dataset.balance, seq: Number(tr.dataset.seq),
    }));
  }
  /** Like the page's own display: thousands grouped, trailing zeros past two decimals dropped, never rounded. */
  function display(amount) {
    const m = /^(-?)([0-9]+)(?:\.([0-9]+))?$/.exec(amount || "");
    if (!m) return amount;
    let frac = (m[3] || "").replace(/0+$/, "");
    if (frac.length < 2) frac = frac.padEnd(2, "0");
    return m[1] + m[2].replace(/\B(?=([0-9]{3})+(?![0-9]))/g, ",") + "." + frac;
  }
  function markRow(row, computed, ok, same = "same") {
    const cell = row.tr.querySelector(".computed");
    cell.textContent = display(computed);
    cell.title = computed + " exactly";
    const m = row.tr.querySelector(".match");
    m.innerHTML = ok ? `<span class="yes">\u2713 ${same}</span>` : '<span class="no">\u2717 different</span>';
  }

  /** What /funds.json (the numbers of the site's other pages) says: the size it
   *  verified and each fund's balance there; null when it shows no balance. */
  async function loadFunds() {
    let d;
    try { d = JSON.parse(decode(await get("funds.json"), "/funds.json")); } catch (e) {
      if (e instanceof Failure) throw e;
      fail("/funds.json is not JSON");
    }
    const v = d && d.verified;
    const contracts = Array.isArray(d && d.contracts) ? d.contracts : [];
    if (!v || v.status !== "verified") {
      if (contracts.length) fail("/funds.json shows balances it does not call verified");
      return null;
    }
    if (!Number.isSafeInteger(v.tree_size) || v.tree_size < 0) fail("/funds.json has no verified size");
    const balances = new Map();
    for (const c of contracts) balances.set(String(c.contract), String(c.balance));
    return { size: v.tree_size, balances };
  }

  /** Every balance /funds.json shows must be the recomputed one at its size. */
  function compareFunds(funds, computed) {
    if (!funds) return;
    for (const [sym, bal] of funds.balances) {
      const got = computed.get(sym);
      if (got !== bal) fail(`/funds.json shows ${bal} for ${sym} but the log gives ${got === undefined ? "no such fund" : got}`, "page");
    }
    for (const sym of computed.keys()) {
      if (!funds.balances.has(sym)) fail(`the log has a fund ${sym} /funds.json does not show`, "page");
    }
  }

  async function loadKeyAndCheckpoint() {
    step("key", "running");
    if (!window.isSecureContext || !window.crypto || !crypto.subtle) {
      fail("this page is not in a secure context (open it over HTTPS) so the browser cannot check signatures");
    }
    const vk = await get("vkey");
    const anchor = await parseVkey(decode(vk, "/vkey").trim(), "/vkey");
    const shown = el("vkey-shown");
    if (shown) shown.textContent = anchor.vkey;
    step("key", "done");
    const cpBytes = await get("checkpoint", { optional: true });
    if (cpBytes === null) fail("this site publishes no signed checkpoint yet");
    const note = splitNote(cpBytes, "the checkpoint");
    const cp = parseCheckpoint(note.textStr);
    if (cp.origin !== anchor.name) fail(`the checkpoint is for ${cp.origin}, not ${anchor.name}`);
    return { anchor, cpBytes, note, cp };
  }

  async function checkCheckpointSignature(note, cp, book) {
    step("checkpoint", "running");
    const k = book.keyAt(cp.size);
    const sig = note.sigs.find((s) => s.name === k.name && equal(s.kid, k.kid));
    if (!sig) fail("the checkpoint is not signed by the log key in force at its size");
    if (!(await verifySig(k, sig.sig, note.text))) fail("the checkpoint's signature is not valid");
    step("checkpoint", "done");
  }

  function comparePage(balances, pageSize, cp) {
    step("page", "running");
    const rows = pageRows();
    if (pageSize > cp.size) fail(`this page shows a checkpoint of ${pageSize} entries but the site serves one of ${cp.size}`);
    const pageRoot = app.dataset.root;
    if (pageSize === cp.size && pageRoot && pageRoot !== b64encode(cp.root)) fail("this page shows a different root than the signed checkpoint");
    let bad = null;
    for (const row of rows) {
      const got = balances.get(row.contract);
      const ok = got !== undefined && got === row.balance;
      markRow(row, got === undefined ? "not in the log" : got, ok);
      if (!ok && !bad) bad = `this page shows ${row.balance} for ${row.contract} but the log gives ${got === undefined ? "no such fund" : got}`;
    }
    for (const sym of balances.keys()) {
      if (!rows.some((r) => r.contract === sym) && !bad) bad = `the log has a fund ${sym} this page does not show`;
    }
    if (bad) fail(bad);
    step("page", "done");
  }

  /** The full check: replay every entry up to the checkpoint. */
  async function full(ctx) {
    const { anchor, note, cp, funds } = ctx;
    const pageSize = Number(app.dataset.size);
    const fundsSize = funds ? funds.size : 0;
    if (fundsSize > cp.size) fail("a new checkpoint was signed while checking: run again");
    const r = new Replay(anchor, cp, pageSize);
    let pageBalances = pageSize === 0 ? new Map() : null;
    let fundsBalances = fundsSize === 0 ? new Map() : null;
    r.onEntry = (seq) => {
      if (seq + 1 === pageSize) pageBalances = r.book.balances();
      if (seq + 1 === fundsSize) fundsBalances = r.book.balances();
    };
    step("entries", "running"); step("rules", "running"); step("tree", "running"); step("tiles", "running");
    paintProgress(0, cp.size, true);
    try {
      await r.entries();
    } finally {
      r.stopped = true;
    }
    paintProgress(cp.size, cp.size, true);
    if (r.book.since !== null && r.book.lastKind !== "state") {
      fail(`entry ${cp.size - 1}: the checkpoint of size ${cp.size} does not end with a state entry (format 2)`, "rules");
    }
    step("entries", "done"); step("rules", "done");
    await checkCheckpointSignature(note, cp, r.book);
    if (!equal(r.root(), cp.root)) fail(`the Merkle root of the ${cp.size} entries does not match the signed checkpoint`, "tree");
    step("tree", "done");
    await r.edgeTiles();
    step("tiles", "done");
    comparePage(pageBalances || new Map(), pageSize, cp);
    compareFunds(funds, fundsBalances || new Map());
    return "full";
  }

  /** The replay of every entry of a checkpoint, in a pipeline: the entry
   *  bundles are fetched a few ahead, split and opened, and their signatures
   *  sent to the worker pool, while the bundles before them go through the
   *  rules here, one entry after the other. Each verdict is taken in seq
   *  order, so a failure names the same entry and reason as checking one
   *  entry at a time would (ledger/verify/verifier.py, "the order of checks").
   *  An entry is opened ahead with the key that would be in force if every
   *  key entry before it is valid; when the replay finds another key in
   *  force there, it opens it again with that one. */
  class Replay {
    constructor(anchor, cp, pageSize) {
      this.anchor = anchor; this.cp = cp;
      this.book = new Book(anchor);
      this.ahead = { keys: [{ start: 0, key: anchor }], keyAt: Book.prototype.keyAt };
      this.prev = ZERO32;
      this.levels = [];  // per tile level: how many hashes, and those of the tile not yet complete
      this.stack = [];  // the compact range: [{h, height}], largest first
      this.due = [];  // [level, index, hashes] of full tiles to compare
      // older partial tiles a reader of the page's checkpoint fetches, checked with the tiles they are part of
      this.older = pageSize > 0 && pageSize < cp.size ? impliedPartials(pageSize) : new Map();
      this.files = new Prefetch();  // bundles and tiles, fetched ahead
      this.onEntry = () => {};
      this.stopped = false;
    }
    bundle(index) {
      const first = index * TILE_WIDTH;
      return { index, first, width: Math.min(TILE_WIDTH, this.cp.size - first) };
    }
    async entries() {
      const count = Math.ceil(this.cp.size / TILE_WIDTH);
      const depth = Math.max(4, 3 * pool.size());
      const prepared = [];
      let chain = Promise.resolve();
      const start = (i) => {
        const b = this.bundle(i);
        this.files.ahead(tilePath(-1, i, b.width));
        this.files.ahead(tilePath(0, i, b.width));  // its leaves' hash tile, compared when it is complete
        chain = chain.then(() => this.prepare(b));
        prepared[i] = chain;
      };
      for (let i = 0; i < Math.min(depth, count); i++) start(i);
      for (let i = 0; i < count; i++) {
        const b = await prepared[i];
        prepared[i] = null;
        if (i + depth < count) start(i + depth);
        await this.apply(b);
        for (const [L, index, hashes] of this.due.splice(0)) await this.checkTile(L, index, hashes);
        if (paintProgress(b.first + b.width, this.cp.size, false)) await yieldToPage();
      }
    }
    /** Bundle ``b`` fetched, split and its entries opened; a fault is kept for its turn. */
    async prepare(b) {
      if (this.stopped) return Object.assign(b, { fault: new Failure("stopped") });
      let data;
      try {
        data = await this.files.take(tilePath(-1, b.index, b.width));
        Object.assign(b, splitBundle(data, b.width, b.first));
      } catch (e) {
        return Object.assign(b, { fault: e });
      }
      // the signature checks of the whole bundle, and its leaf hashes, go to the workers together
      const jobs = [];
      const collect = (k, sig, text) => (sigShapeOk(sig) ? jobs.push([k, sig, text]) - 1 : false);
      b.opened = [];
      for (let i = 0; i < b.items.length; i++) b.opened.push(await this.open(b.items[i], b.first + i, this.ahead, collect));
      b.work = pool.bundle(data, b.items, jobs);
      b.work.catch(() => {});
      return b;
    }
    /** Entry ``seq`` opened with the keys of ``book``: its JSON and its
     *  signature checks (``verify``'s results), or its fault. */
    async open(data, seq, book, verify) {
      const key = book.keyAt(seq);
      try {
        const o = await openEntry(data, seq, book, this.anchor.name, verify);
        o.key = key;
        if (book === this.ahead && o.obj.kind === "key") this.ahead.keys.push({ start: seq + 1, key: o.signers[1] });
        return o;
      } catch (e) {
        if (!(e instanceof Failure)) throw e;
        return { key, failure: e };
      }
    }
    /** Bundle ``b`` through the chain and the rules, entry by entry; then its signatures. */
    async apply(b) {
      if (b.fault) throw b.fault;
      const { first, width, items, error } = b;
      const { leaves, oks } = await b.work;
      const signed = [];
      // a failure is named in seq order, after the other checks of its own entry
      const firstBadSignature = async (upto) => {
        for (let j = 0; j < upto; j++) if (!(await signed[j])) fail(`entry ${first + j}: the signature is not valid`, "entries");
      };
      for (let i = 0; i < width; i++) {
        const seq = first + i;
        if (i === items.length) {
          await firstBadSignature(i);
          fail(error, "entries");
        }
        let o = b.opened[i];
        b.opened[i] = null;
        const key = this.book.keyAt(seq);
        const again = o.key !== key && o.key.vkey !== key.vkey;
        if (again) o = await this.open(items[i], seq, this.book, verifySig);  // not the key it was opened with
        if (o.failure) {
          await firstBadSignature(i);
          fail(o.failure.message, "entries");
        }
        signed.push(again ? Promise.all(o.checks).then((r) => r.every(Boolean)) : o.checks.every((j) => j !== false && oks[j]));
        await this.rules(o, seq, leaves[i], () => firstBadSignature(i));
        if (o.obj.kind === "key") {
          await firstBadSignature(i + 1);  // the next entries are signed by the key it brings
          try { await this.book.rotate(o.obj, seq, this.anchor.name); } catch (e) {
            if (e instanceof Failure) fail(`entry ${seq}: ${e.message}`, "rules");
            throw e;
          }
        }
        this.prev = leaves[i];
        this.append(leaves[i]);
        this.onEntry(seq);
      }
      if (error) { await firstBadSignature(width); fail(error, "entries"); }
      await firstBadSignature(width);
    }
    /** The order of ledger/verify/verifier.py: chain, time, rules, canonical form; then the signatures. */
    async rules(o, seq, leaf, badSignatureBefore) {
      const { obj, isCanonical } = o;
      try {
        if (obj.prev !== b64encode(this.prev)) fail("prev is not the hash of the entry before", "entries");
        if (obj.seq !== seq) fail(`seq is ${obj.seq}, expected ${seq}`, "entries");
        checkTime(obj.time);
        await this.book.apply(obj, seq, this.anchor.name, leaf);
        if (!isCanonical) fail("not in canonical JSON");
      } catch (e) {
        if (!(e instanceof Failure)) throw e;
        await badSignatureBefore();
        fail(`entry ${seq}: ${e.message}`, e.step || "rules");
      }
    }
    /** Append a leaf to the tree; a tile it completes is due for comparison
     *  once its entries passed (at the end of their bundle), as ledger/verify/verifier.py does. */
    append(leaf) {
      let node = { h: leaf, height: 0 };
      this.pushLevel(0, leaf);
      while (this.stack.length && this.stack[this.stack.length - 1].height === node.height) {
        const left = this.stack.pop();
        node = { h: nodeHashSync(left.h, node.h), height: node.height + 1 };
        if (node.height % 8 === 0) this.pushLevel(node.height / 8, node.h);
      }
      this.stack.push(node);
    }
    pushLevel(L, h) {
      const lv = this.levels[L] || (this.levels[L] = { count: 0, tail: [] });
      lv.tail.push(h);
      lv.count++;
      if (lv.tail.length === TILE_WIDTH) {
        this.due.push([L, lv.count / TILE_WIDTH - 1, lv.tail]);
        lv.tail = [];
      }
    }
    /** The root: the compact range folded from the right. */
    root() {
      if (!this.stack.length) return sha256Sync(new Uint8Array(0));
      let root = this.stack[this.stack.length - 1].h;
      for (let i = this.stack.length - 2; i >= 0; i--) root = nodeHashSync(this.stack[i].h, root);
      return root;
    }
    /** The partial tiles at the right edge of each level. */
    async edgeTiles() {
      for (let L = 0; L < this.levels.length; L++) {
        const lv = this.levels[L];
        if (lv.tail.length) await this.checkTile(L, Math.floor(lv.count / TILE_WIDTH), lv.tail);
      }
    }
    /** Tile (L, index) as the entries give it (``all``), and its older partial tiles (at level 0, bundles too). */
    async checkTile(L, index, all) {
      const widths = [all.length, ...(this.older.get(`${L}/${index}`) || []).filter((w) => w < all.length)];
      for (const w of widths) {
        const path = tilePath(L, index, w);
        const tile = await this.files.take(path);
        if (!equal(tile, concat(...all.slice(0, w)))) {
          let bad = 0;
          while (bad < w - 1 && equal(tile.subarray(bad * 32, bad * 32 + 32), all[bad])) bad++;
          fail(`entry ${(index * TILE_WIDTH + bad) * 2 ** (8 * L)}: the hash tile ${path} does not match the entries`, "tiles");
        }
      }
      if (L !== 0) return;
      for (const w of (this.older.get(`-1/${index}`) || []).filter((w) => w < all.length)) {
        const path = tilePath(-1, index, w);
        const { items, error } = splitBundle(await get(path), w, index * TILE_WIDTH);
        for (let i = 0; i < items.length; i++) {
          if (!equal(leafHashSync(items[i]), all[i])) fail(`entry ${index * TILE_WIDTH + i}: the entry bundle ${path} does not match the entries`, "tiles");
        }
        if (error) fail(`${path}: ${error}`, "tiles");
      }
    }
  }

  // --- before a large replay: what it will cost ---------------------------------------------

  /** Bytes of the hash tiles of a tree of ``size``: 32 per hash at every level. */
  function tileBytes(size) {
    let n = 0;
    for (let count = size; count > 0; count = Math.floor(count / TILE_WIDTH)) n += 32 * count;
    return n;
  }
  /** What the full replay of ``cp`` will cost, from the last entry bundle
   *  (its size per entry) and a short sample of this browser's signature
   *  checks on all its cores. */
  async function estimate(cp, anchor) {
    const last = Math.floor((cp.size - 1) / TILE_WIDTH), width = cp.size - last * TILE_WIDTH;
    const { items } = splitBundle(await get(tilePath(-1, last, width)), width, last * TILE_WIDTH);
    if (!items.length) fail("the last entry bundle is empty");
    const perEntry = items.reduce((n, d) => n + d.length + 2, 0) / items.length;
    const sample = [];
    for (const d of items) {
      try {
        const n = splitNote(d, "an entry");
        for (const s of n.sigs) if (s.sig.length === 64) sample.push([anchor.pub, s.sig, n.text]);
      } catch (e) { if (!(e instanceof Failure)) throw e; }
    }
    // the verdicts do not matter here, only how long they take
    const rate = sample.length ? await pool.measure(sample, 400) : 0;
    return { bytes: cp.size * perEntry + tileBytes(cp.size), memory: cp.size * BYTES_PER_ENTRY + 64e6,
      rate, seconds: rate ? cp.size / (rate * REPLAY_SHARE) : null, cores: pool.size() };
  }
  // the replay holds each liquidation id (to refuse one recorded twice): about this much per entry
  const BYTES_PER_ENTRY = 250;
  // the share of the signature rate the whole replay reaches (bench/browser.py measures it:
  // 0.31 to 0.38 on 2 cores, docs/PERFORMANCE.md): the lower end, so the estimate is not optimistic
  const REPLAY_SHARE = 0.3;
  function mb(n) { return n >= 1e9 ? `${(n / 1e9).toFixed(1)} GB` : `${Math.max(1, Math.round(n / 1e6)).toLocaleString("en-US")} MB`; }
  function duration(s) {
    if (s < 90) return `${Math.max(1, Math.round(s))} s`;
    if (s < 5400) return `${Math.round(s / 60)} min`;
    return `${(s / 3600).toFixed(1)} h`;
  }

  /** A log too large to replay unasked: say what it costs, and wait for the button. */
  async function offer(ctx, desktopLimit) {
    const plan = el("plan"), start = el("start-full");
    const e = await estimate(ctx.cp, ctx.anchor);
    const n = ctx.cp.size.toLocaleString("en-US");
    el("plan-text").textContent = `The full check of this log replays all ${n} entries. It downloads about ${mb(e.bytes)}, ` +
      `needs about ${mb(e.memory)} of memory, and takes about ${e.seconds === null ? "(unknown)" : duration(e.seconds)} in this browser ` +
      `(it just checked ${Math.round(e.rate).toLocaleString("en-US")} signatures a second on ${e.cores} core${e.cores === 1 ? "" : "s"}; ` +
      "a slow connection makes it longer).";
    const desktop = el("plan-desktop");
    desktop.hidden = ctx.cp.size <= desktopLimit;
    if (!desktop.hidden) {
      const links = el("plan-funds");
      links.textContent = "";
      pageRows().forEach((row, i) => {
        if (i) links.append(", ");
        const a = document.createElement("a");
        a.href = "/contract/" + encodeURIComponent(row.contract) + "#fund-check";
        a.textContent = row.contract;
        links.append(a);
      });
    }
    plan.hidden = false;
    start.disabled = false;
    for (const s of ["entries", "rules", "tree", "checkpoint", "tiles", "page"]) step(s, "");
    verdict.className = "verdict partial";
    verdictText.textContent = `not checked yet: a log of ${n} entries (start the full check below)`;
    app.dataset.verdict = "not-started";
    setStatus("");
  }

  async function run(asked) {
    rerun.disabled = true;
    el("start-full").disabled = true;
    delete app.dataset.verdict;
    verdict.className = "verdict running";
    verdictText.textContent = "checking…";
    document.querySelectorAll("#steps li").forEach((li) => (li.className = ""));
    bytesFetched = 0;
    const started = performance.now();
    try {
      const ctx = await loadKeyAndCheckpoint();
      memoryOrigin = ctx.cp.origin;
      const remembered = await checkMemory(ctx.anchor, ctx.cp, new TreeTiles(ctx.cp.size, ctx.cp.root));
      const before = (remembered.damaged ? "What this browser remembered of this log was damaged: it was ignored and forgotten. " : "") +
        (remembered.old ? `This browser verified this log here before at ${sizeText(remembered.old.size)}; ` +
        "the new checkpoint extends that one (checked from the hash tiles). " : "");
      showMemory(el("memory-text"), before, false);
      el("memory-forget").hidden = !remembered.old;
      const params = new URLSearchParams(location.search);
      const limit = (name, fallback) => (params.has(name) ? Number(params.get(name)) : Number(fallback));
      const auto = limit("threshold", app.dataset.autoLimit || 50000);
      if (!asked && params.get("full") !== "1" && ctx.cp.size > auto) {
        await offer(ctx, limit("desktop", app.dataset.desktopLimit || 1000000));
        return;
      }
      el("plan").hidden = true;
      ctx.funds = await loadFunds();
      await full(ctx);
      const kept = rememberCheckpoint(ctx.anchor, ctx.cp, ctx.cpBytes);
      showMemory(el("memory-text"), before + (kept ? `This browser now remembers this checkpoint (${sizeText(ctx.cp.size)}), ` +
        "to warn you if this site later shows an older or a different log." : "This browser could not remember this checkpoint (storage is off or full)."), false);
      el("memory-forget").hidden = !kept;
      verdict.className = "verdict ok";
      verdictText.textContent = "verified";
      app.dataset.verdict = "verified";
      const secs = (performance.now() - started) / 1000;
      app.dataset.seconds = secs.toFixed(3);
      setStatus(`Replayed all ${ctx.cp.size.toLocaleString("en-US")} entries (${(bytesFetched / 1e6).toFixed(2)} MB) in ${secs.toFixed(1)} s ` +
        `on ${pool.size()} core${pool.size() === 1 ? "" : "s"}. Every balance below is what the signed log says.`);
    } catch (e) {
      const reason = e instanceof Failure ? e.message : `unexpected error: ${e && e.message ? e.message : e}`;
      verdict.className = "verdict bad";
      verdictText.textContent = "failed: " + reason;
      app.dataset.verdict = "failed";
      if (e instanceof MemoryWarning) {
        verdictText.textContent = "warning: not verified, see below";
        app.dataset.verdict = e.kind;
        showMemory(el("memory-text"), "Warning: " + e.message, true);
        el("memory-forget").hidden = false;
      }
      if (e instanceof Failure && e.step) {
        document.querySelectorAll("#steps li.running").forEach((li) => (li.className = ""));
        step(e.step, "failed");
      } else {
        document.querySelectorAll("#steps li.running").forEach((li) => (li.className = "failed"));
      }
      if (!(e instanceof Failure)) console.error(e);
    } finally {
      rerun.disabled = false;
    }
  }

  let memoryOrigin = null;
  rerun.addEventListener("click", () => run(true));
  el("memory-forget").addEventListener("click", () => {
    const n = memory && memoryOrigin ? memory.forget(memoryOrigin) : 0;
    el("memory-forget").hidden = true;
    showMemory(el("memory-text"), `This browser forgot what it remembered of this log (${n} record${n === 1 ? "" : "s"}).`, false);
  });
  el("start-full").addEventListener("click", () => run(true));
  run(false);
})();
