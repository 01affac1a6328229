"""`python -m democore`: run the demo core system until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from democore.server import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m democore", description="The demo system of record, with fault injection."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100, help="0 picks a free port")
    parser.add_argument("--db", default="var/democore.sqlite3", help="SQLite file or :memory:")
    parser.add_argument(
        "--token",
        default=os.environ.get("CORE_API_TOKEN", ""),
        help="API token callers must present (default: $CORE_API_TOKEN; empty: no auth)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for injected faults")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s democore %(message)s")
    if args.db != ":memory:":
        Path(args.db).parent.mkdir(parents=True, exist_ok=True)
    server = serve(args.host, args.port, db_path=args.db, token=args.token, seed=args.seed)
    host, port = server.server_address[:2]
    # The first stdout line is read by democore.testing to learn a port picked with --port 0.
    print(f"democore listening on http://{host}:{port}", flush=True)

    def stop(signum, frame):
        # shutdown() waits for serve_forever to return, so it cannot run on the serving thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.stopping.set()
        server.server_close()
        server.store.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
