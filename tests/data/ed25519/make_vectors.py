"""Write vectors.json: the Ed25519 encodings every fundledger verifier
refuses before the signature equation (docs/FORMAT.md, "Signatures").

Everything is derived here from the curve's definition (RFC 8032 5.1) with
plain integer arithmetic, independently of ledger/format/note.py, and the RFC 8032
section 7.1 TEST 1 key and signature. Run: python tests/data/ed25519/make_vectors.py
"""

from __future__ import annotations

import json
import os

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, -1, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)


def add(a, b):
    """Extended-coordinates-free affine addition on -x^2 + y^2 = 1 + d x^2 y^2."""
    (x1, y1), (x2, y2) = a, b
    t = D * x1 * x2 * y1 * y2 % P
    return ((x1 * y2 + x2 * y1) * pow(1 + t, -1, P) % P, (y1 * y2 + x1 * x2) * pow(1 - t, -1, P) % P)


def recover_x(y, sign):
    """x from y and the sign bit (RFC 8032 5.1.3), or None if not on the curve."""
    if y >= P:
        return None
    xx = (y * y - 1) * pow(D * y * y + 1, -1, P) % P
    x = pow(xx, (P + 3) // 8, P)
    if (x * x - xx) % P:
        x = x * SQRT_M1 % P
    if (x * x - xx) % P:
        return None
    if x == 0 and sign:
        return None
    return P - x if x & 1 != sign else x


def order(pt, limit=8):
    q, n = pt, 1
    while q != (0, 1):
        q, n = add(q, pt), n + 1
        if n > limit:
            return None
    return n


def enc(y, sign):
    return (y | sign << 255).to_bytes(32, "little").hex()


def small_order():
    """The 8 points of order dividing 8: the y of order 1, 2 and 4 points are
    1, p - 1 and 0; those of order 8 solve d y^4 + 2 y^2 - 1 = 0."""
    ys = {1, P - 1, 0}
    disc = (1 + D) % P
    r = pow(disc, (P + 3) // 8, P)
    if (r * r - disc) % P:
        r = r * SQRT_M1 % P
    for root in (r, P - r):
        y2 = (root - 1) * pow(D, -1, P) % P
        y = pow(y2, (P + 3) // 8, P)
        if (y * y - y2) % P:
            y = y * SQRT_M1 % P
        if (y * y - y2) % P == 0:
            ys.update({y, P - y})
    out = []
    for y in sorted(ys):
        for sign in (0, 1):
            x = recover_x(y, sign)
            if x is not None:
                out.append({"hex": enc(y, sign), "order": order((x, y)), "canonical": True})
    # the same points spelled non-canonically: x = 0 with the sign bit, y + p < 2**255
    for y in sorted(ys):
        for sign in (0, 1):
            if recover_x(y, sign) is None and recover_x(y, 1 - sign) is not None:
                out.append({"hex": enc(y, sign), "order": order((0, y)), "canonical": False})
            if y + P < 2**255:  # (with the sign bit too when x = 0)
                x = recover_x(y, sign)
                out.append({"hex": enc(y + P, sign), "order": order((x or 0, y)), "canonical": False})
    return out


def non_canonical():
    """Every encoding with y >= p (19 values of y, two sign bits)."""
    return [{"hex": enc(y, s), "on_curve": recover_x(y - P, s) is not None} for y in range(P, 2**255) for s in (0, 1)]


# RFC 8032 section 7.1, TEST 1 (the empty message)
TEST1_PK = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
TEST1_SIG = ("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")


def signatures():
    r, s = TEST1_SIG[:64], int.from_bytes(bytes.fromhex(TEST1_SIG[64:]), "little")
    identity = enc(1, 0)
    return [
        {"what": "RFC 8032 TEST 1", "public_key": TEST1_PK, "message": "", "signature": TEST1_SIG, "valid": True},
        {"what": "TEST 1 with S + L (the same point: malleable)", "public_key": TEST1_PK, "message": "",
         "signature": r + (s + L).to_bytes(32, "little").hex(), "valid": False},
        {"what": "TEST 1 with S = L", "public_key": TEST1_PK, "message": "",
         "signature": r + L.to_bytes(32, "little").hex(), "valid": False},
        {"what": "identity key, R = identity, S = 0: the equation holds for every message", "public_key": identity,
         "message": "6d65737361676520", "signature": identity + "00" * 32, "valid": False},
        {"what": "identity key, R = the identity spelled with y = p + 1, S = 0", "public_key": identity,
         "message": "", "signature": enc(P + 1, 0) + "00" * 32, "valid": False},
    ]


def main() -> None:
    data = {
        "about": "Ed25519 encodings refused before the signature equation; made by make_vectors.py (see PROVENANCE.md)",
        "p": str(P), "L": str(L),
        "small_order": small_order(),
        "non_canonical": non_canonical(),
        "signatures": signatures(),
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors.json")
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
