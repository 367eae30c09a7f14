// The trader lookup of a lot contract's page ("Was I deleveraged, and was
// it fair?", docs/SITE.md). Everything the trader types stays in this
// browser: the account commitment (or the account id and salt it is
// computed from) never goes into a request. The page downloads the list of
// positions closed by every ADL event of the contract (adl.json, the same
// for every visitor), computes the trader's position commitment in each
// event with WebCrypto and looks for it there.
"use strict";

(function () {
  // docs/FORMAT.md, "Commitments" (ledger/rules/adl.py holds the same)
  const ACCOUNT_DOMAIN = "fundledger-adl-account/v1\n";
  const POSITION_DOMAIN = "fundledger-adl-position/v1\n";
  const MAX_PAGES = 100000; // pages of adl.json read for one lookup
  const utf8 = new TextEncoder();

  function concat(parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  async function sha256(bytes) {
    return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  }

  function b64(bytes) {
    let s = "";
    for (const b of bytes) s += String.fromCharCode(b);
    return btoa(s);
  }

  // An account commitment as standard base64 of 32 bytes, or null.
  function parseCommitment(text) {
    const t = text.trim();
    if (!/^[A-Za-z0-9+/]{43}=$/.test(t)) return null;
    const s = atob(t);
    const bytes = Uint8Array.from(s, (ch) => ch.charCodeAt(0));
    return bytes.length === 32 && b64(bytes) === t ? bytes : null;
  }

  // C = SHA-256("fundledger-adl-account/v1\n" || account id || "\n" || salt)
  function accountCommitment(accountId, salt) {
    return sha256(concat([utf8.encode(ACCOUNT_DOMAIN), utf8.encode(accountId), utf8.encode("\n"),
      utf8.encode(salt)]));
  }

  // SHA-256("fundledger-adl-position/v1\n" || C || contract || "\n" || liquidation id)
  function positionCommitment(account, contract, liquidationId) {
    if (account.length !== 32) throw new Error("an account commitment is 32 bytes");
    return sha256(concat([utf8.encode(POSITION_DOMAIN), account, utf8.encode(contract + "\n" + liquidationId)]));
  }

  // Every page of adl.json: {events, checkpointSize, complete}.
  async function fetchEvents(url) {
    const events = [];
    let next = url, pages = 0, checkpointSize = 0;
    while (next && pages < MAX_PAGES) {
      const r = await fetch(next, { credentials: "omit", cache: "no-cache" });
      if (!r.ok) throw new Error(`${next}: HTTP ${r.status}`);
      const d = await r.json();
      if (pages === 0) checkpointSize = d.checkpoint_size;
      events.push(...d.events);
      next = d.next;
      pages += 1;
    }
    return { events, checkpointSize, complete: !next };
  }

  // The events that closed a position of ``account``: [{event, position}],
  // and the events whose list the site cut short (not searched in full).
  async function findPositions(account, contract, events) {
    const found = [], partial = [];
    for (const ev of events) {
      if (ev.malformed) continue;
      const mine = b64(await positionCommitment(account, contract, ev.liquidation));
      const p = ev.positions.find((x) => x.commitment === mine);
      if (p) found.push({ event: ev, position: p });
      else if (!ev.complete) partial.push(ev);
    }
    return { found, partial };
  }

  function el(tag, text, attrs) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = text;
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  }

  function link(href, text) {
    return el("a", text, { href });
  }

  function resultTable(contract, found, checkpointSize) {
    const table = el("table", null, { class: "history adl-mine" });
    const head = el("tr");
    for (const h of ["Event", "Liquidation", "Time (UTC)", "Your rank", "Ranked above you", "Closed of your size",
      "Price", "Proof"]) head.append(el("th", h, { scope: "col" }));
    const thead = el("thead");
    thead.append(head);
    table.append(thead);
    const body = el("tbody");
    for (const { event: ev, position: p } of found) {
      const tr = el("tr", null, { "data-seq": String(ev.seq), "data-rank": String(p.rank) });
      const cells = [
        link(`/contract/${encodeURIComponent(contract)}/adl/${ev.seq}`, `#${ev.seq}`),
        ev.liquidation, String(ev.time).replace("T", " ").replace(/(\.\d+)?Z$/, ""), String(p.rank),
        `${p.rank} of the ${ev.queue_size} in the queue`,
        `${p.qty} of ${p.size}`, p.price,
        p.seq < checkpointSize ? link(`/entry/${p.seq}/receipt`, `receipt of entry #${p.seq}`)
          : `entry #${p.seq}: not yet in a signed checkpoint`,
      ];
      for (const c of cells) {
        const td = el("td");
        td.append(c);
        tr.append(td);
      }
      body.append(tr);
    }
    table.append(body);
    const wrap = el("div", null, { class: "scroll" });
    wrap.append(table);
    return wrap;
  }

  function notFoundText(contract, n) {
    return `No position of this account was closed by any of the ${n} ADL event${n === 1 ? "" : "s"} of ` +
      `${contract} in this log. That is not a proof that your position was never in a queue: a position that was ` +
      "spared is not in the log. Its place is checked with the queue proof the exchange gives you, against the " +
      "event's queue root.";
  }

  async function account(form) {
    const c = form.querySelector("#adl-commitment").value;
    const id = form.querySelector("#adl-account").value;
    const salt = form.querySelector("#adl-salt").value;
    if (c.trim() && (id || salt)) throw new Error("Give your account commitment, or your account id and salt: not both.");
    if (c.trim()) {
      const bytes = parseCommitment(c);
      if (!bytes) throw new Error("An account commitment is standard base64 of 32 bytes (44 characters, ending in =).");
      return bytes;
    }
    if (!id || !salt) throw new Error("Give your account commitment, or both your account id and your salt.");
    return accountCommitment(id, salt);
  }

  async function lookup(section) {
    const status = section.querySelector("#adl-lookup-status");
    const out = section.querySelector("#adl-lookup-result");
    const contract = section.dataset.contract;
    out.replaceChildren();
    delete section.dataset.result;
    let acct;
    try {
      acct = await account(section.querySelector("form"));
    } catch (e) {
      status.textContent = e.message;
      section.dataset.result = "bad-input";
      return;
    }
    status.textContent = "Downloading the positions closed by every ADL event…";
    try {
      const got = await fetchEvents(section.dataset.json);
      const { found, partial } = await findPositions(acct, contract, got.events);
      if (found.length) {
        status.textContent = `Found: ${found.length} ADL event${found.length === 1 ? "" : "s"} closed your position.`;
        out.append(resultTable(contract, found, got.checkpointSize));
      } else {
        status.textContent = "Not found.";
        out.append(el("p", notFoundText(contract, got.events.length), { id: "adl-not-found" }));
      }
      if (partial.length || !got.complete) {
        out.append(el("p", "Some events were not searched in full (their lists are too long for this site); " +
          "fundledger adl on a copy of the log searches them all.", { class: "unverified" }));
      }
      section.dataset.result = found.length ? "found" : "not-found";
    } catch (e) {
      status.textContent = `The lookup failed: ${e.message}`;
      section.dataset.result = "error";
    }
  }

  function start() {
    const section = document.getElementById("adl-lookup");
    if (!section) return;
    const form = section.querySelector("form");
    form.hidden = false;
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      lookup(section);
    });
  }

  window.FundledgerADL = { accountCommitment, positionCommitment, parseCommitment, b64, findPositions };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
