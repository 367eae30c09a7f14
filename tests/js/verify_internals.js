/* The rules of publish/static/verify.js under node, for tests: the file's
 * functions up to its page code, with the few browser globals they read
 * stubbed. Nothing here is served. */
"use strict";
const fs = require("fs");
const path = require("path");

function load() {
  const src = fs.readFileSync(path.join(__dirname, "..", "..", "publish", "static", "verify.js"), "utf8");
  const open = "(function () {";
  const start = src.indexOf(open) + open.length;
  const cut = src.indexOf("  // --- the page ---");
  if (start < open.length || cut < 0) throw new Error("verify.js: the IIFE or its page section is not where expected");
  const names = ["Book", "Failure", "consistent", "decimalStr", "leafHashSync", "mthSync", "b64encode", "b64decode",
    "canonical", "amountStr", "movementUnits", "positive"];
  const body = '"use strict";\n' + src.slice(start, cut) + `\nreturn { ${names.join(", ")} };`;
  return new Function("document", "window", body)({ baseURI: "http://localhost/" }, {});
}

module.exports = load();
