"""`python -m pretrain ...` (also under torchrun): the same flags as `edgezoo pretrain`."""

import argparse
import logging
import sys

from pretrain.cli import add_pretrain_arguments, run_pretrain
from zoo.errors import EdgezooError


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m pretrain", description="Self-supervised pretraining.")
    add_pretrain_arguments(parser)
    try:
        run_pretrain(parser.parse_args(argv))
    except EdgezooError as exc:  # expected: one line, as `edgezoo pretrain`; a bug keeps its traceback
        logging.getLogger("edgezoo").error("pretrain failed: %s", exc)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
