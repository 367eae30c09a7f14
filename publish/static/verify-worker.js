/* fundledger: work off the page's thread (publish/static/verify.js).
 * {id, items: [[public key, signature, text], ...]} is answered with
 * {id, oks: [true|false, ...]}: WebCrypto's Ed25519 verdict for each, in order.
 * {id, data, spans: [offset, length, ...], checks: [[public key, signature,
 * offset, length], ...]} (an entry bundle, its entries and the signatures to
 * check, as views of data) is answered with {id, leaves, oks}: the entries'
 * RFC 6962 leaf hashes, 32 bytes each, and the verdicts.
 * The explicit checks of docs/FORMAT.md ("Signatures") run in the page
 * before a signature is sent here. */
"use strict";
const keys = new Map();
let last = null;  // [public key, its CryptoKey promise]: nearly every check of a log is by one key
function keyOf(pub) {
  if (last && last[0].length === pub.length && last[0].every((b, i) => b === pub[i])) return last[1];
  const id = Array.from(pub, (b) => b.toString(16).padStart(2, "0")).join("");
  if (!keys.has(id)) keys.set(id, crypto.subtle.importKey("raw", pub, { name: "Ed25519" }, false, ["verify"]));
  last = [pub, keys.get(id)];
  return last[1];
}
const verify = async (pub, sig, text) => crypto.subtle.verify({ name: "Ed25519" }, await keyOf(pub), sig, text);
async function bundle({ data, spans, checks }) {
  const hashes = [];
  for (let i = 0; i < spans.length; i += 2) {
    const leaf = new Uint8Array(spans[i + 1] + 1);
    leaf.set(data.subarray(spans[i], spans[i] + spans[i + 1]), 1);
    hashes.push(crypto.subtle.digest("SHA-256", leaf));
  }
  const oks = await Promise.all(checks.map(([pub, sig, at, n]) => verify(pub, sig, data.subarray(at, at + n))));
  const leaves = new Uint8Array(16 * spans.length);
  (await Promise.all(hashes)).forEach((h, i) => leaves.set(new Uint8Array(h), 32 * i));
  return { leaves, oks };
}
self.onmessage = async (e) => {
  const { id, items } = e.data;
  try {
    if (items) {
      self.postMessage({ id, oks: await Promise.all(items.map(([pub, sig, text]) => verify(pub, sig, text))) });
    } else {
      const r = await bundle(e.data);
      self.postMessage({ id, leaves: r.leaves, oks: r.oks }, [r.leaves.buffer]);
    }
  } catch (err) {
    self.postMessage({ id, error: String(err && err.message ? err.message : err) });
  }
};
