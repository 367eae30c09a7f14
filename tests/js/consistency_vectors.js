/* verify.js's RFC 9162 consistency check against transparency-dev/merkle's
 * vectors (tests/vectors/transparency-dev-merkle/consistency): prints
 * "ok <count>" or the first disagreement, and exits 1 on one. */
"use strict";
const fs = require("fs");
const path = require("path");
const v = require("./verify_internals.js");

const dir = path.join(__dirname, "..", "vectors", "transparency-dev-merkle", "consistency");
const raw = (s) => Uint8Array.from(Buffer.from(s || "", "base64"));
let n = 0;
for (const sub of fs.readdirSync(dir)) {
  for (const name of fs.readdirSync(path.join(dir, sub))) {
    const t = JSON.parse(fs.readFileSync(path.join(dir, sub, name), "utf8"));
    if (!(t.size1 > 0)) continue;  // an ADL event shows at least one leaf
    const ok = v.consistent(t.size1, t.size2, raw(t.root1), raw(t.root2), (t.proof || []).map(raw));
    if (ok === Boolean(t.wantErr)) {
      console.log(`disagree: ${sub}/${name}: ${t.desc}: consistent() says ${ok}`);
      process.exit(1);
    }
    n++;
  }
}
console.log(`ok ${n}`);
