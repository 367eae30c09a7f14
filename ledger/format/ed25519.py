"""Ed25519 encodings refused before the signature equation (docs/FORMAT.md,
"Signatures"), so that libsodium, OpenSSL, Go and WebCrypto agree on every
signature: a public key or R that is a small-order point or a non-canonical
encoding, and an S that is not below the group order L. Pure; re-exported
by :mod:`ledger.format.note`, which checks every Ed25519 signature with it.
"""

from __future__ import annotations

__all__ = ["ED25519_ORDER", "REFUSED_POINTS", "ed25519_shape_ok"]

ED25519_SIG_SIZE = 64

_FIELD_P = (1 << 255) - 19
ED25519_ORDER = (1 << 252) + 27742317777372353535851937790883648493
"""L, the order of the Ed25519 base point: a signature's S must be below it."""
_ORDER8_Y = 2707385501144840649318225287225658788936804267575313519463743609750303402022
"""y of two of the four points of order 8 (the other two have p - y)."""


def _refused_points() -> frozenset[bytes]:
    """The 32-byte point encodings refused as a key or R: the 8 small-order
    points (orders 1, 2, 4, 8) in canonical form, x = 0 with the sign bit
    set (the identity and the order-2 point spelled non-canonically), and
    every y >= p with either sign bit (non-canonical, whatever it decodes
    to): 48 strings, so that the check is one set lookup."""
    out = set()
    for y in (1, _FIELD_P - 1, 0, _ORDER8_Y, _FIELD_P - _ORDER8_Y):
        out.update((y | sign << 255).to_bytes(32, "little") for sign in (0, 1))
    for y in range(_FIELD_P, 1 << 255):
        out.update((y | sign << 255).to_bytes(32, "little") for sign in (0, 1))
    return frozenset(out)


REFUSED_POINTS = _refused_points()


def ed25519_shape_ok(public_key: bytes, signature: bytes) -> bool:
    """The checks made before the Ed25519 equation: a 64-byte signature whose
    R is neither small-order nor non-canonical and whose S is below L, by a
    key that is neither. (S < 2**252 < L whenever its top byte is below
    0x10: the integer compare is only for the rare rest.)"""
    return (
        len(signature) == ED25519_SIG_SIZE
        and signature[:32] not in REFUSED_POINTS
        and (signature[63] < 0x10 or int.from_bytes(signature[32:], "little") < ED25519_ORDER)
        and public_key not in REFUSED_POINTS
    )
