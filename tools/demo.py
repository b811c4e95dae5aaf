"""``make demo``: shows what has landed. Grows with each layer."""

from __future__ import annotations

import sys


def main() -> int:
    print("DCiS demo: nothing has landed yet.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
