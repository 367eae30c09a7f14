/* fundledger: what this browser remembers of a log it checked (docs/SITE.md,
 * "Return visits"), in localStorage, per log origin (the checkpoint's first
 * line):
 *   fundledger/v1/<log origin>/checkpoint   the last checkpoint verified here:
 *     {"size", "root" (base64), "note" (the signed checkpoint), "vkey"}
 *   fundledger/v1/<log origin>/fund/<SYMBOL>   the fund state "Check this
 *     fund" verified: {"size", "root", "seq", "hash", "entries", "balance",
 *     "scale", "type", "multiplier", "currency", "ids", and "lot" for a lot
 *     contract} where ids is the base64 of 8 bytes of SHA-256 per
 *     liquidation id of the fund (or "").
 * What is read back is untrusted input: parsed strictly, with limits; a
 * damaged record is forgotten and reported as damaged.
 * No library. Plain ES2020. */
"use strict";

window.FundledgerMemory = (function () {
  const PREFIX = "fundledger/v1/";
  const MAX_RECORD = 4 << 20;  // characters
  const B64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
  const SYMBOL = /^[A-Z0-9][A-Z0-9._-]{0,31}$/;
  const DECIMAL = /^(0|[1-9][0-9]{0,47})(\.[0-9]{1,18})?$/;

  function store() {
    try { return window.localStorage || null; } catch (e) { return null; }
  }
  const isSize = (v) => Number.isSafeInteger(v) && v >= 0;
  const isB64 = (v, max) => typeof v === "string" && v.length <= max && B64.test(v);
  const isText = (v, max) => typeof v === "string" && v.length <= max;
  const SHAPES = {
    checkpoint: { size: isSize, root: (v) => isB64(v, 44) && v.length === 44, note: (v) => isText(v, 16384), vkey: (v) => isText(v, 1024) },
    fund: {
      size: isSize, root: (v) => isB64(v, 44) && v.length === 44, seq: isSize, hash: (v) => isB64(v, 44) && v.length === 44,
      entries: (v) => isSize(v) && v > 0, balance: (v) => typeof v === "string" && DECIMAL.test(v),
      scale: (v) => Number.isInteger(v) && v >= 0 && v <= 18, type: (v) => v === "linear" || v === "inverse",
      multiplier: (v) => typeof v === "string" && DECIMAL.test(v), currency: (v) => typeof v === "string" && /^[A-Z0-9]{1,16}$/.test(v),
      ids: (v) => v === "" || isB64(v, MAX_RECORD),
      lot: (v) => v === undefined || (typeof v === "string" && DECIMAL.test(v)),
    },
  };
  const OPTIONAL = new Set(["lot"]);  // keys a record may leave out

  /** {status: "none" | "ok" | "damaged", value}; a damaged record is removed. */
  function read(key, shape) {
    const s = store();
    let text;
    try { text = s ? s.getItem(key) : null; } catch (e) { return { status: "none" }; }
    if (text === null) return { status: "none" };
    let v = null;
    try { if (text.length <= MAX_RECORD) v = JSON.parse(text); } catch (e) { v = null; }
    const keys = Object.keys(shape);
    const ok = v !== null && typeof v === "object" && !Array.isArray(v) &&
      Object.keys(v).every((k) => keys.includes(k)) && keys.every((k) => (OPTIONAL.has(k) || Object.prototype.hasOwnProperty.call(v, k)) && shape[k](v[k]));
    if (!ok) {
      try { s.removeItem(key); } catch (e) { /* nothing to do */ }
      return { status: "damaged" };
    }
    return { status: "ok", value: v };
  }
  /** Remember ``value``; false when the browser keeps nothing (private mode, full storage). */
  function write(key, value) {
    const s = store();
    try { s.setItem(key, JSON.stringify(value)); return true; } catch (e) { return false; }
  }
  const cpKey = (origin) => PREFIX + origin + "/checkpoint";
  const fundKey = (origin, symbol) => PREFIX + origin + "/fund/" + symbol;

  return {
    checkpoint: (origin) => read(cpKey(origin), SHAPES.checkpoint),
    saveCheckpoint: (origin, cp) => write(cpKey(origin), cp),
    fund: (origin, symbol) => (SYMBOL.test(symbol) ? read(fundKey(origin, symbol), SHAPES.fund) : { status: "none" }),
    saveFund: (origin, symbol, f) => SYMBOL.test(symbol) && write(fundKey(origin, symbol), f),
    /** Forget everything remembered of the log ``origin``; how many records went. */
    forget(origin) {
      const s = store();
      if (!s) return 0;
      const mine = [];
      for (let i = 0; i < s.length; i++) {
        const k = s.key(i);
        if (k && k.startsWith(PREFIX + origin + "/")) mine.push(k);
      }
      mine.forEach((k) => s.removeItem(k));
      return mine.length;
    },
  };
})();
