"""``dtn-node --config node.toml``: the node daemon (built by the daemon issue)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dtn-node", description="Run a DCiS bundle node.")
    parser.add_argument("--config", required=True, help="path to node.toml")
    parser.parse_args(argv)
    print("error: the dtn-node daemon is not implemented yet (see the daemon issue)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
