/* Entries through verify.js's rules (its Book) under node, for tests.
 * stdin: JSON [{"name", "since", "entries": [{"seq", "obj"}]}]; each case
 * replays its entries (objects, without signatures) in a fresh Book whose
 * format 2 began at ``since``; an entry's leaf hash is ``leaf`` (base64)
 * if given, else that of its canonical text. stdout: JSON [{"name", "ok", "seq", "error", "funds"}]:
 * the first entry refused, or every fund's balance and entry count. */
"use strict";
const v = require("./verify_internals.js");

async function replay(c) {
  const book = new v.Book({ name: "test", kid: new Uint8Array(4) });
  for (const { seq, obj, leaf: given } of c.entries) {
    book.since = seq > c.since ? c.since : null;
    const leaf = given ? v.b64decode(given, "leaf") : v.leafHashSync(new TextEncoder().encode(v.canonical(obj) + "\n"));
    try {
      await book.apply(obj, seq, "test", leaf);
    } catch (e) {
      if (!(e instanceof v.Failure)) throw e;
      return { name: c.name, ok: false, seq, error: e.message };
    }
  }
  const funds = {};
  for (const [sym, f] of book.funds) funds[sym] = { balance: v.amountStr(f.balance, f.scale), entries: f.entries, seq: f.seq };
  return { name: c.name, ok: true, pending: book.pending ? book.pending.event : null, funds };
}

(async () => {
  let input = "";
  for await (const chunk of process.stdin) input += chunk;
  const out = [];
  for (const c of JSON.parse(input)) out.push(await replay(c));
  process.stdout.write(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(2); });
