"""``python -m ledger.cli``: the ``fundledger`` console script."""

from ledger.cli import main

main()
