"""A small stand-in for a bank's system of record, used by the demo and by tests.

It plays "the other system" that writeback posts to, so it shares nothing with Closeloop:
standard library only (http.server + sqlite3), its own database file, and fault injection
that reproduces what real cores do to callers — errors, errors after the work was committed,
hangs, slowness and outages. `python -m democore --help` starts it; docs/democore.md
describes the HTTP contract.
"""
