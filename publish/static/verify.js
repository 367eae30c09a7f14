/* fundledger: verify the log in the visitor's browser.
 *
 * Fetches /vkey, /checkpoint and the C2SP tlog-tiles of this site and
 * checks, trusting nothing the server computed:
 *   - every entry is a signed note by the log key in force (Ed25519 via
 *     WebCrypto); a key entry hands over to a new key and is signed by both;
 *   - entry n carries seq n and prev = base64 SHA-256(0x00 || entry n-1)
 *     (32 zero bytes for entry 0), in canonical JSON with exactly the
 *     fields of its kind;
 *   - every movement, payout, ADL amount and balance, recomputed with BigInt
 *     from the entry's own inputs by the rules of ledger/fund.py;
 *   - the RFC 6962 root of all entries equals the checkpoint's root, the
 *     checkpoint is signed by the key in force at its size, and every hash
 *     tile equals the recomputed tree;
 *   - the balances shown on this page equal the recomputed ones.
 *   - so do the balances of /funds.json (what the other pages show), at the
 *     size the site says it verified.
 * Over data-full-limit entries (default 50,000) it checks instead the
 * signed checkpoint and an inclusion proof (receipt) for each fund's entry
 * shown on the page. That proves less (not that the entry is the fund's
 * latest, nor that no fund is left out), so it then says "not verified";
 * ?full=1 forces the full check.
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

  // --- signed notes (c2sp.org/signed-note) -------------------------------------

  function checkKeyName(name, what) {
    if (!name || name.includes("+") || /\s/u.test(name) || /[\u0000-\u001f\u007f-\u009f]/u.test(name)) {
      fail(`${what}: bad key name`);
    }
  }

  async function keyId(name, alg, pub) {
    return (await sha256(concat(enc.encode(name), Uint8Array.of(0x0a, alg), pub))).subarray(0, 4);
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
    const textLen = enc.encode(s.slice(0, i + 1)).length;
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
    if (sig.length !== 64) return Promise.resolve(false);
    return crypto.subtle.verify({ name: "Ed25519" }, k.key, sig, text);
  }

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
  function splitBundle(data, width, first) {
    const out = [];
    let pos = 0;
    for (let i = 0; i < width; i++) {
      if (pos + 2 > data.length) fail(`entry ${first + i}: the entry bundle is truncated`);
      const n = (data[pos] << 8) | data[pos + 1];
      if (pos + 2 + n > data.length) fail(`entry ${first + i}: the entry bundle is truncated`);
      out.push(data.subarray(pos + 2, pos + 2 + n));
      pos += 2 + n;
    }
    if (pos !== data.length) fail(`the entry bundle at ${first} has extra bytes`);
    return out;
  }

  // --- exact decimals (ledger/fund.py) -----------------------------------------------

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
  /** floor(delta * 10**scale): linear q*m*(f-b) (long); inverse q*m*(1/b - 1/f) (long); shorts negated. */
  function movementUnits(type, side, q, m, b, f, scale) {
    const [qn, qk] = q, [mn, mk] = m, [bn, bk] = b, [fn, fk] = f;
    let num = qn * mn * (fn * pow10(bk) - bn * pow10(fk));
    let den;
    if (type === "linear") den = pow10(qk + mk + fk + bk);
    else if (type === "inverse") den = pow10(qk + mk) * bn * fn;
    else fail(`unknown contract type ${type}`);
    if (side === "short") num = -num;
    else if (side !== "long") fail(`unknown side ${side}`);
    return floorDiv(num * pow10(scale), den);
  }

  // --- entries ---------------------------------------------------------------------

  /** RFC 8785 for the values an entry may hold (ASCII strings, safe integers). */
  function canonical(obj) {
    const keys = Object.keys(obj).sort();
    return "{" + keys.map((k) => JSON.stringify(k) + ":" + value(obj[k])).join(",") + "}";
    function value(v) {
      if (typeof v === "string") {
        return JSON.stringify(v).replace(/[\u007f-\uffff]/g, (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
      }
      if (typeof v === "number" && Number.isSafeInteger(v)) return String(v);
      fail("an entry field is neither a string nor an integer");
    }
  }

  const FIELDS = {
    contract: ["contract", "currency", "kind", "multiplier", "prev", "scale", "seq", "time", "type"],
    liquidation: ["adl", "balance", "bankruptcy_price", "contract", "delta", "fill_price", "id", "kind", "paid",
      "prev", "qty", "seq", "side", "time"],
    key: ["contract", "kind", "prev", "seq", "time", "vkey"],
  };
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

  /** The replayed state: funds, liquidation ids, log keys. */
  class Book {
    constructor(anchor) {
      this.funds = new Map();
      this.seen = new Set();
      this.keys = [{ start: 0, key: anchor }];
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
    async apply(obj, seq, origin) {
      const kind = obj.kind;
      const want = FIELDS[kind];
      if (!want) fail(`unknown entry kind ${String(kind).slice(0, 30)}: only contract, liquidation and key exist`);
      const have = Object.keys(obj).filter((k) => k !== "mark_price").sort();
      const allowMark = kind === "liquidation";
      if ("mark_price" in obj && !allowMark) fail("unexpected field mark_price");
      if (have.join(",") !== want.join(",")) fail(`the fields of a ${kind} entry are wrong: ${have.join(", ")}`);
      if (kind === "contract") {
        const sym = obj.contract;
        if (typeof sym !== "string" || !SYMBOL.test(sym)) fail("bad contract symbol");
        if (typeof obj.currency !== "string" || !CURRENCY.test(obj.currency)) fail("bad currency");
        if (!Number.isInteger(obj.scale) || obj.scale < 0 || obj.scale > 18) fail("bad scale");
        if (obj.type !== "linear" && obj.type !== "inverse") fail("bad contract type");
        const mult = positive(obj.multiplier, "multiplier");
        if (this.funds.has(sym)) fail(`contract ${sym} is registered twice`);
        this.funds.set(sym, { scale: obj.scale, type: obj.type, mult, currency: obj.currency, balance: 0n });
        return;
      }
      if (kind === "key") {
        if (obj.contract !== "") fail("a key entry must have an empty contract");
        const k = await parseVkey(String(obj.vkey), "the new key");
        if (k.name !== origin) fail("the new key is not named after the log");
        if (this.keys.some((e) => equal(e.key.pub, k.pub))) fail("a key entry may not bring back a key already used");
        this.keys.push({ start: seq + 1, key: k });
        return;
      }
      // liquidation
      const fund = this.funds.get(obj.contract);
      if (!fund) fail(`unknown contract ${String(obj.contract).slice(0, 40)}`);
      if (typeof obj.id !== "string" || obj.id.length > 128 || !PRINTABLE_ID.test(obj.id)) fail("bad liquidation id");
      const idKey = obj.contract + "\u0000" + obj.id;
      if (this.seen.has(idKey)) fail(`liquidation ${obj.id} of ${obj.contract} is recorded twice`);
      if (obj.side !== "long" && obj.side !== "short") fail("side must be long or short");
      const q = positive(obj.qty, "qty");
      const b = positive(obj.bankruptcy_price, "bankruptcy_price");
      const f = positive(obj.fill_price, "fill_price");
      if ("mark_price" in obj) positive(obj.mark_price, "mark_price");
      const delta = movementUnits(fund.type, obj.side, q, fund.mult, b, f, fund.scale);
      let paid = 0n, adl = 0n, balance;
      if (delta >= 0n) {
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
      fund.balance = balance;
      this.seen.add(idKey);
    }
  }

  /** Parse an entry's note; the signature checks it needs (run by the caller). */
  async function openEntry(data, seq, book, origin) {
    if (data.length > MAX_ENTRY_BYTES) fail(`entry ${seq} is over ${MAX_ENTRY_BYTES} bytes`);
    const n = splitNote(data, `entry ${seq}`);
    if (!n.textStr.endsWith("\n") || n.textStr.indexOf("\n") !== n.textStr.length - 1) fail(`entry ${seq}: text is not one line`);
    let obj;
    try { obj = JSON.parse(n.textStr); } catch (e) { fail(`entry ${seq}: broken JSON`); }
    if (obj === null || typeof obj !== "object" || Array.isArray(obj)) fail(`entry ${seq}: not a JSON object`);
    if (canonical(obj) + "\n" !== n.textStr) fail(`entry ${seq}: not in canonical JSON`);
    const signers = [book.keyAt(seq)];
    if (obj.kind === "key") signers.push(await parseVkey(String(obj.vkey), `entry ${seq}: the new key`));
    if (n.sigs.length !== signers.length) fail(`entry ${seq}: ${n.sigs.length} signatures, expected ${signers.length}`);
    const checks = n.sigs.map((s, i) => {
      const k = signers[i];
      if (s.name !== k.name || !equal(s.kid, k.kid)) fail(`entry ${seq}: signed by a key that may not sign here (${s.name})`);
      return verifySig(k, s.sig, n.text);
    });
    return { obj, checks };
  }

  // --- inclusion proofs (RFC 9162 2.1.3.2) and receipts (c2sp.org/tlog-proof) --------

  async function verifyInclusion(leaf, index, size, proof, root) {
    if (index >= size) return false;
    let fn = BigInt(index), sn = BigInt(size - 1), r = leaf;
    for (const p of proof) {
      if (sn === 0n) return false;
      if ((fn & 1n) === 1n || fn === sn) {
        r = await nodeHash(p, r);
        if ((fn & 1n) === 0n) while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
      } else {
        r = await nodeHash(r, p);
      }
      fn >>= 1n; sn >>= 1n;
    }
    return sn === 0n && equal(r, root);
  }

  function parseReceipt(bytes, what) {
    const s = decode(bytes, what);
    const lines = s.split("\n");
    if (lines[0] !== "c2sp.org/tlog-proof@v1") fail(`${what} is not a tlog-proof@v1 receipt`);
    let i = 1, extra = null;
    if (lines[i] && lines[i].startsWith("extra ")) { extra = b64decode(lines[i].slice(6), `${what} extra`); i++; }
    if (!lines[i] || !/^index (0|[1-9][0-9]{0,15})$/.test(lines[i])) fail(`${what} has no index`);
    const index = Number(lines[i].slice(6)); i++;
    const proof = [];
    while (i < lines.length && lines[i] !== "") { const h = b64decode(lines[i], `${what} proof`); if (h.length !== 32) fail(`${what}: bad proof hash`); proof.push(h); i++; }
    if (i >= lines.length) fail(`${what} has no checkpoint`);
    const cp = enc.encode(lines.slice(i + 1).join("\n"));
    return { index, proof, extra, checkpoint: cp };
  }

  // --- the page --------------------------------------------------------------------------

  const app = document.getElementById("verify-app");
  if (!app) return;
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
    const book = new Book(anchor);
    let prev = ZERO32;
    let pageBalances = pageSize === 0 ? new Map() : null;
    let fundsBalances = fundsSize === 0 ? new Map() : null;
    // complete subtree hashes at tree levels 0, 8, 16, ...: what the hash tiles hold
    const levels = [];
    const stack = [];  // compact range: [{h, height}], largest first
    step("entries", "running"); step("rules", "running"); step("tree", "running");
    paintProgress(0, cp.size, true);
    const bundlePath = (index) => tilePath(-1, index, Math.min(TILE_WIDTH, cp.size - index * TILE_WIDTH));
    let next = cp.size > 0 ? get(bundlePath(0)) : null;
    for (let index = 0; index * TILE_WIDTH < cp.size; index++) {
      const first = index * TILE_WIDTH;
      const width = Math.min(TILE_WIDTH, cp.size - first);
      const bundle = await next;
      // fetch the next bundle while this one is checked
      next = (index + 1) * TILE_WIDTH < cp.size ? get(bundlePath(index + 1)) : null;
      if (next) next.catch(() => {});
      const items = splitBundle(bundle, width, first);
      const leaves = await Promise.all(items.map(leafHash));
      const sigChecks = [];
      for (let i = 0; i < width; i++) {
        const seq = first + i;
        let opened;
        try {
          opened = await openEntry(items[i], seq, book, anchor.name);
        } catch (e) {
          if (e instanceof Failure) fail(e.message, "entries");
          throw e;
        }
        const { obj, checks } = opened;
        const signed = Promise.all(checks).then((oks) => oks.every(Boolean));
        sigChecks.push(signed.then((ok) => ok || fail(`entry ${seq}: the signature is not valid`, "entries")));
        try {
          if (obj.seq !== seq) fail(`seq is ${obj.seq}`, "entries");
          if (obj.prev !== b64encode(prev)) fail("prev is not the hash of the entry before", "entries");
          checkTime(obj.time);
          await book.apply(obj, seq, anchor.name);
        } catch (e) {
          if (!(e instanceof Failure)) throw e;
          // a forged entry fails its signature first: say that, it is the root cause
          if (!(await signed)) fail(`entry ${seq}: the signature is not valid`, "entries");
          fail(`entry ${seq}: ${e.message}`, e.step || "rules");
        }
        prev = leaves[i];
        // append the leaf to the tree
        let node = { h: leaves[i], height: 0 };
        (levels[0] = levels[0] || []).push(node.h);
        while (stack.length && stack[stack.length - 1].height === node.height) {
          const left = stack.pop();
          node = { h: await nodeHash(left.h, node.h), height: node.height + 1 };
          if (node.height % 8 === 0) (levels[node.height / 8] = levels[node.height / 8] || []).push(node.h);
        }
        stack.push(node);
        if (seq + 1 === pageSize) pageBalances = book.balances();
        if (seq + 1 === fundsSize) fundsBalances = book.balances();
      }
      await Promise.all(sigChecks);
      if (paintProgress(first + width, cp.size, false)) await yieldToPage();
    }
    paintProgress(cp.size, cp.size, true);
    step("entries", "done"); step("rules", "done");
    // the root: fold the compact range from the right
    let root = await sha256(new Uint8Array(0));
    if (stack.length) {
      root = stack[stack.length - 1].h;
      for (let i = stack.length - 2; i >= 0; i--) root = await nodeHash(stack[i].h, root);
    }
    if (!equal(root, cp.root)) fail(`the Merkle root of the ${cp.size} entries does not match the signed checkpoint`, "tree");
    step("tree", "done");
    await checkCheckpointSignature(note, cp, book);
    step("tiles", "running");
    for (let L = 0; L < levels.length; L++) {
      const hashes = levels[L] || [];
      for (let index = 0; index * TILE_WIDTH < hashes.length; index++) {
        const width = Math.min(TILE_WIDTH, hashes.length - index * TILE_WIDTH);
        const tile = await get(tilePath(L, index, width));
        const want = concat(...hashes.slice(index * TILE_WIDTH, index * TILE_WIDTH + width));
        if (!equal(tile, want)) fail(`the hash tile ${tilePath(L, index, width)} does not match the entries`, "tiles");
      }
    }
    step("tiles", "done");
    comparePage(pageBalances || new Map(), pageSize, cp);
    compareFunds(funds, fundsBalances || new Map());
    return "full";
  }

  /** The large-log check: the signed checkpoint and one receipt per fund shown. */
  async function sampled(ctx) {
    const { anchor, cpBytes, note, cp } = ctx;
    const pageSize = Number(app.dataset.size);
    if (pageSize > cp.size) fail(`this page shows a checkpoint of ${pageSize} entries but the site serves one of ${cp.size}`);
    for (const s of ["entries", "rules", "tiles"]) step(s, "skipped");
    const book = new Book(anchor);
    async function receiptFor(seq) {
      const r = parseReceipt(await get(`entry/${seq}/receipt`), `the receipt of entry ${seq}`);
      if (!equal(r.checkpoint, cpBytes)) fail("a new checkpoint was signed while checking: run again");
      if (r.index !== seq || !r.extra) fail(`the receipt of entry ${seq} is for another entry`);
      const { obj, checks } = await openEntry(r.extra, seq, book, anchor.name);
      for (const ok of await Promise.all(checks)) if (!ok) fail(`entry ${seq}: the signature is not valid`);
      if (obj.seq !== seq) fail(`entry ${seq}: seq is ${obj.seq}`);
      if (!(await verifyInclusion(await leafHash(r.extra), seq, cp.size, r.proof, cp.root))) {
        fail(`entry ${seq} is not in the log of the signed checkpoint`);
      }
      return obj;
    }
    step("entries", "running");
    // key changes first, in order: they say which key signs what
    const keySeqs = (app.dataset.keySeqs || "").split(",").filter((s) => s !== "").map(Number);
    for (const seq of keySeqs) {
      const obj = await receiptFor(seq);
      if (obj.kind !== "key") fail(`entry ${seq} is not a key change`);
      await book.apply(obj, seq, anchor.name);
    }
    step("tree", "running");
    await checkCheckpointSignature(note, cp, book);
    const rows = pageRows();
    const balances = new Map();
    let done = 0;
    for (const row of rows) {
      const obj = await receiptFor(row.seq);
      if (obj.contract !== row.contract) fail(`entry ${row.seq} is about ${obj.contract}, not ${row.contract}`);
      let bal;
      if (obj.kind === "liquidation") bal = obj.balance;
      else if (obj.kind === "contract") bal = amountStr(0n, obj.scale);
      else fail(`entry ${row.seq} is not a fund entry`);
      balances.set(row.contract, bal);
      paintProgress(++done, rows.length, true);
    }
    // proofs of a few entries: not every entry, not the whole tree
    step("tree", "skipped"); step("entries", "skipped");
    step("page", "running");
    for (const row of rows) {
      const got = balances.get(row.contract);
      markRow(row, got, got === row.balance, "in a signed entry");
      if (got !== row.balance) fail(`this page shows ${row.balance} for ${row.contract} but its signed entry says ${got}`);
    }
    step("page", "skipped");
    setStatus(`Large log (${cp.size.toLocaleString("en-US")} entries): checked the signed checkpoint and that each balance below is in a signed entry of the log. ` +
      "Not checked: that it is the fund's latest entry, and that no fund is left out. Run the full check (?full=1) or fundledger verify for every entry.");
    return "partial";
  }

  async function run() {
    rerun.disabled = true;
    verdict.className = "verdict running";
    verdictText.textContent = "checking…";
    document.querySelectorAll("#steps li").forEach((li) => (li.className = ""));
    bytesFetched = 0;
    const started = performance.now();
    try {
      const ctx = await loadKeyAndCheckpoint();
      const params = new URLSearchParams(location.search);
      const limit = params.has("threshold") ? Number(params.get("threshold")) : Number(app.dataset.fullLimit || 50000);
      const isFull = params.get("full") === "1" || ctx.cp.size <= limit;
      if (isFull) ctx.funds = await loadFunds();
      const what = isFull ? await full(ctx) : await sampled(ctx);
      if (what === "partial") {
        // proved less than the whole log: never "verified"
        verdict.className = "verdict partial";
        verdictText.textContent = "not verified: a large log, only partly checked (see below)";
        app.dataset.verdict = "partial";
        return;
      }
      verdict.className = "verdict ok";
      verdictText.textContent = "verified";
      app.dataset.verdict = "verified";
      const secs = ((performance.now() - started) / 1000).toFixed(1);
      if (what === "full") setStatus(`Replayed all ${ctx.cp.size.toLocaleString("en-US")} entries (${(bytesFetched / 1e6).toFixed(2)} MB) in ${secs} s. Every balance below is what the signed log says.`);
    } catch (e) {
      const reason = e instanceof Failure ? e.message : `unexpected error: ${e && e.message ? e.message : e}`;
      verdict.className = "verdict bad";
      verdictText.textContent = "failed: " + reason;
      app.dataset.verdict = "failed";
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

  rerun.addEventListener("click", run);
  run();
})();
