"""Build the open-data SQLite database from CSV files (installed by the opendata role).

usage: python opendata-build-db.py DATABASE CSV [CSV ...]

One table per CSV (named after the file), column types detected from the values (integer,
float, text) by sqlite-utils. The database is written next to DATABASE and renamed over it,
so Datasette never sees a half-built file.
"""

import csv
import os
import sys
from pathlib import Path

import sqlite_utils
from sqlite_utils.utils import TypeTracker


def build(database: Path, csvs: list[Path]) -> None:
    tmp = database.with_name(f".{database.name}.tmp")
    tmp.unlink(missing_ok=True)
    db = sqlite_utils.Database(tmp)
    for path in csvs:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            tracker = TypeTracker()
            rows = tracker.wrap(csv.DictReader(fh))
            table = db[path.stem]
            table.insert_all(rows)
            table.transform(types=tracker.types)
        print(f"{path.stem}: {table.count} rows")
    db.close()
    os.chmod(tmp, 0o644)
    os.replace(tmp, database)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    build(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]])
