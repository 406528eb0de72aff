"""`python -m pretrain ...` (also under torchrun): the same flags as `edgezoo pretrain`."""

import argparse
import logging
import sys

from pretrain.cli import add_pretrain_arguments, run_pretrain


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m pretrain", description="Self-supervised pretraining.")
    add_pretrain_arguments(parser)
    run_pretrain(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
