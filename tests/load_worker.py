"""Load one delivery with the plain functions (no Prefect): the process the kill and
concurrency tests start, kill and race. Usage: python -m tests.load_worker PATH [--hold-lock]."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

from landpipe.config import Settings
from landpipe.db import make_engine
from landpipe.load import load
from landpipe.sources import read_delivery
from landpipe.validate import validate


def main() -> None:
    delivery = read_delivery(sys.argv[1])
    validation = validate(delivery.parcels, delivery.findings)
    engine = make_engine(Settings())
    result = load(engine, delivery, validation, started_at=datetime.now(UTC))
    print(result.batch, result.status, flush=True)


if __name__ == "__main__":
    main()
