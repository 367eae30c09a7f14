// A second, independent implementation of ML-DSA-44 witness cosignatures
// (c2sp.org/tlog-cosignature v1.1, type 0x06, the subtree/v1 message), on
// @noble/post-quantum, for tests/test_interop_mldsa.py only. It shares no
// code with fundledger: it parses the vkey, the checkpoint text and the
// signature line itself, and builds the signed message itself.
//
// Reads one JSON array of requests on stdin, writes one JSON array of
// answers on stdout. NOBLE_ML_DSA is the path of @noble/post-quantum's
// ml-dsa.js (installed by the test from package-lock.json here).
//
//   {"op": "cosign", "seed": hex, "name": str, "checkpoint": str, "timestamp": str, "deterministic": bool}
//     -> {"vkey": str, "line": str, "message": hex}
//   {"op": "verify", "vkey": str, "checkpoint": str, "line": str}
//     -> {"ok": bool, "reason": str, "timestamp": str, "message": hex}
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const { ml_dsa44 } = await import(pathToFileURL(process.env.NOBLE_ML_DSA).href);

const TYPE = 0x06, PK = 1312, SIG = 2420, EM_DASH = "\u2014 ";
const utf8 = (s) => new TextEncoder().encode(s);
const hex = (b) => Buffer.from(b).toString("hex");
const b64 = (b) => Buffer.from(b).toString("base64");

function unb64(s) {
  const b = Buffer.from(s, "base64");
  if (b64(b) !== s) throw new Error("not canonical base64");
  return new Uint8Array(b);
}

function keyId(name, pub) {
  return createHash("sha256").update(Buffer.concat([utf8(name + "\n"), Buffer.from([TYPE]), pub])).digest().subarray(0, 4);
}

function u64(v) {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(v));
  return b;
}

function opaque8(bytes) {
  if (bytes.length < 1 || bytes.length > 255) throw new Error("opaque<1..2^8-1> out of range");
  return Buffer.concat([Buffer.from([bytes.length]), bytes]);
}

// The checkpoint text: origin, size, base64 root, then extension lines (not signed).
function checkpoint(text) {
  if (!text.endsWith("\n")) throw new Error("checkpoint text does not end in a newline");
  const [origin, size, root] = text.slice(0, -1).split("\n");
  if (!/^(0|[1-9][0-9]*)$/.test(size)) throw new Error("bad tree size");
  const hash = unb64(root);
  if (hash.length !== 32) throw new Error("bad root hash");
  return { origin, size: BigInt(size), hash };
}

// struct { label[12] "subtree/v1\n\0"; opaque cosigner_name<1..255>; u64 timestamp;
//          opaque log_origin<1..255>; u64 start; u64 end; u8 hash[32] }
function message(name, timestamp, cp) {
  return Buffer.concat([utf8("subtree/v1\n\0"), opaque8(utf8(name)), u64(timestamp), opaque8(utf8(cp.origin)),
    u64(0), u64(cp.size), cp.hash]);
}

function parseVkey(vkey) {
  const [name, id, ...rest] = vkey.split("+");
  const raw = unb64(rest.join("+"));
  if (raw.length !== 1 + PK || raw[0] !== TYPE) throw new Error("not an ML-DSA-44 cosigner vkey");
  const pub = raw.subarray(1);
  if (hex(keyId(name, pub)) !== id) throw new Error("key id does not match");
  return { name, id: keyId(name, pub), pub };
}

function cosign({ seed, name, checkpoint: text, timestamp, deterministic }) {
  const { publicKey, secretKey } = ml_dsa44.keygen(Uint8Array.from(Buffer.from(seed, "hex")));
  const msg = message(name, timestamp, checkpoint(text));
  const sig = ml_dsa44.sign(msg, secretKey, deterministic ? { extraEntropy: false } : {});
  const id = keyId(name, publicKey);
  return {
    vkey: `${name}+${hex(id)}+${b64(Buffer.concat([Buffer.from([TYPE]), publicKey]))}`,
    line: `${EM_DASH}${name} ${b64(Buffer.concat([id, u64(timestamp), sig]))}\n`,
    message: hex(msg),
  };
}

function verify({ vkey, checkpoint: text, line }) {
  const key = parseVkey(vkey);
  if (!line.startsWith(EM_DASH) || !line.endsWith("\n")) return { ok: false, reason: "not a signature line" };
  const [name, sigB64] = line.slice(EM_DASH.length, -1).split(" ");
  const raw = unb64(sigB64);
  if (name !== key.name || hex(raw.subarray(0, 4)) !== hex(key.id)) return { ok: false, reason: "another key" };
  if (raw.length !== 4 + 8 + SIG) return { ok: false, reason: `${raw.length - 4} bytes` };
  const timestamp = Buffer.from(raw.subarray(4, 12)).readBigUInt64BE();
  if (timestamp >= 1n << 63n) return { ok: false, reason: "timestamp not below 2**63" };
  const msg = message(name, timestamp, checkpoint(text));
  const ok = ml_dsa44.verify(raw.subarray(12), msg, key.pub);
  return { ok, reason: ok ? "" : "signature does not verify", timestamp: String(timestamp), message: hex(msg) };
}

const ops = { cosign, verify };
const out = JSON.parse(readFileSync(0, "utf8")).map((req) => {
  try {
    return ops[req.op](req);
  } catch (e) {
    return { ok: false, error: String(e.message || e) };
  }
});
process.stdout.write(JSON.stringify(out));
