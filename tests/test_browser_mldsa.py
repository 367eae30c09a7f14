"""ML-DSA-44 cosignatures on the site: the home page names each verified
cosigner with its key type, and the in-browser fund check (Debian's
chromium through Playwright), which has no ML-DSA and no witness keys, says
plainly that it did not check an ML-DSA-44 cosignature and counts it as no
witness."""

from __future__ import annotations

import pytest
from test_browser import browser, liq, page  # noqa: F401 (fixtures; skips without chromium)

from ledger.format import note
from ledger.ops import api, witness
from publish.site import BackgroundServer, make_datasette

VERDICT_TIMEOUT_MS = 60_000
CONTRACT = {"kind": "contract", "symbol": "XBTUSDTM", "currency": "USDT", "scale": 8, "type": "linear",
            "multiplier": "0.001"}


@pytest.fixture(scope="module")
def cosigned(tmp_path_factory):
    """A format-2 log whose checkpoint an Ed25519 and an ML-DSA-44 witness cosigned."""
    d = tmp_path_factory.mktemp("browser-mldsa")
    db = str(d / "fund.db")
    store, signer = api.init_ledger(db, str(d / "fund.key"), "example.com/browser-mldsa", log_format=2)
    store.append([CONTRACT], [signer])
    store.append([liq(i, "XBTUSDTM", "long", "39000", str(39000 + i), "1") for i in range(20)], [signer])
    store.add_checkpoint([signer])
    keys = []
    for name, alg in (("ed.witness.example", note.ALG_COSIGNATURE_V1), ("pq.witness.example", note.ALG_MLDSA44)):
        key, state = str(d / f"{name}.key"), str(d / f"{name}.db")
        keys.append(witness.init_witness(key, state, name, alg=alg).verifier())
        witness.add_log(state, store.vkey)
        api.attach_cosignatures(store, witness.add_checkpoint(key, state, api.consistency(store, old_size=0)),
                                [keys[-1]])
    store.close()
    return db, keys


def test_the_home_page_names_the_key_type_of_each_verified_cosigner(cosigned, page):
    db, keys = cosigned
    with BackgroundServer(db, datasette=make_datasette(db, witnesses=[k.vkey() for k in keys])) as url:
        page.goto(url)
        said = page.inner_text("#cosigners")
        sigs = page.request.get(url + "funds.json").json()["checkpoint"]["signatures"]
    assert "ed.witness.example (Ed25519, cosigned " in said and "pq.witness.example (ML-DSA-44, cosigned " in said, said
    assert {s["name"]: (s["role"], s["algorithm"]) for s in sigs if s["role"] != "log"} == {
        "ed.witness.example": ("witness", "Ed25519"), "pq.witness.example": ("witness", "ML-DSA-44")}
    assert page.errors == []


def test_the_fund_check_says_it_did_not_check_an_ml_dsa_cosignature(cosigned, page):
    db, _ = cosigned
    with BackgroundServer(db) as url:
        page.goto(url + "contract/XBTUSDTM")
        page.click("#fund-check-run")
        page.wait_for_selector("#fund-check[data-verdict=verified], #fund-check[data-verdict=failed]",
                               timeout=VERDICT_TIMEOUT_MS)
        verdict = page.inner_text("#fund-check-verdict")
        said = page.inner_text("#fund-check-witnesses")
        checked = page.get_attribute("#fund-check-witnesses", "data-cosigners-checked")
    assert verdict.startswith("checked:"), verdict
    assert "pq.witness.example (not checked in the browser: ML-DSA-44)" in said, said
    assert "ed.witness.example (Ed25519, not checked)" in said, said
    assert "counts none of them as a witness" in said and "nobody but the operator" not in said
    assert checked == "0"
    assert page.errors == []
