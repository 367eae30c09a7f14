/* fundledger: Ed25519 verification off the page's thread (publish/static/verify.js).
 * A message {id, items: [[public key, signature, text], ...]} is answered
 * with {id, oks: [true|false, ...]}: WebCrypto's verdict for each, in order.
 * The explicit checks of docs/FORMAT.md ("Signatures") run in the page
 * before a signature is sent here. */
"use strict";
const keys = new Map();
function keyOf(pub) {
  const id = Array.from(pub, (b) => b.toString(16).padStart(2, "0")).join("");
  if (!keys.has(id)) keys.set(id, crypto.subtle.importKey("raw", pub, { name: "Ed25519" }, false, ["verify"]));
  return keys.get(id);
}
self.onmessage = async (e) => {
  const { id, items } = e.data;
  try {
    const oks = await Promise.all(items.map(async ([pub, sig, text]) =>
      crypto.subtle.verify({ name: "Ed25519" }, await keyOf(pub), sig, text)));
    self.postMessage({ id, oks });
  } catch (err) {
    self.postMessage({ id, error: String(err && err.message ? err.message : err) });
  }
};
