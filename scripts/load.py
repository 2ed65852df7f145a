"""Open-loop load against a running service: per-endpoint latency, errors, memory of every Ray actor.

Run a service with a gallery first (`ufme-ray up`, `ufme-ray demo`), then, with the same
UFME_DATA_DIR (the admin key is read from there, or from UFME_API_KEY / --api-key-file):
    python scripts/load.py --url http://127.0.0.1:8000 --dashboard http://127.0.0.1:8265 --rate 4 \
        --duration-s 600 --warmup-s 60
Prints the tables, writes JSON (--out, default bench-results/load.json); exits 1 on any error or a
memory growth of 5% or more in any actor process. See `proving.load` for the design.
"""

import sys
from pathlib import Path

# `proving` is not installed (it stays out of the product wheel): import it from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proving.load import main

if __name__ == "__main__":
    sys.exit(main())
