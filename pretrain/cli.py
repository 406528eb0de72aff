"""Command-line front of the pretraining stage: flags generated from PretrainConfig.

Every flag defaults to "not given" so that the precedence defaults < recipe <
flags holds; the defaults themselves live only in pretrain/config.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import types
import typing
from pathlib import Path
from typing import Any

from pretrain.config import HELP, PretrainConfig, build_config, list_recipes

log = logging.getLogger(__name__)

_SKIP = {"extra"}


def json_object(text: str) -> dict[str, Any]:
    """argparse type of a mapping option: a JSON object, e.g. '{"img_size": 32, "patch_size": 4}'."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}; expected an object such as "
                                         '\'{"img_size": 32, "patch_size": 4}\'') from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"img_size\": 32}}', got "
                                         f"{type(value).__name__} {text!r}")
    return value


def _field_type(f: dataclasses.Field) -> tuple[Any, int | None]:
    """(element type, nargs) of a config field for argparse."""
    tp = typing.get_type_hints(PretrainConfig)[f.name]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        tp = args[0]
    if typing.get_origin(tp) is tuple:
        inner = typing.get_args(tp)
        return inner[0], len(inner)
    if tp is dict or typing.get_origin(tp) is dict:
        return json_object, None
    return tp, None


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """--flag for every PretrainConfig field (booleans get --flag / --no-flag)."""
    defaults = PretrainConfig()
    for f in dataclasses.fields(PretrainConfig):
        if f.name in _SKIP:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        help_text = f"{HELP.get(f.name, f.name)} (default: {default})"
        tp, nargs = _field_type(f)
        if tp is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, type=tp, nargs=nargs, default=None, help=help_text,
                                metavar="JSON" if tp is json_object else f.name.upper())


def add_pretrain_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", default=None,
                        help=f"recipe name or YAML path, overridden by flags ({', '.join(list_recipes())})")
    parser.add_argument("--out", type=Path, required=True, help="RUN_DIR to write the run into")
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted run in --out from its last checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(parser)


def config_from_args(args: argparse.Namespace) -> PretrainConfig:
    overrides = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(PretrainConfig) if f.name not in _SKIP}
    base = None
    if getattr(args, "resume_from", None) and not getattr(args, "resume", False):
        from pretrain.continual import inherited_config

        base = inherited_config(args.resume_from)
    cfg = build_config(args.recipe, base=base, **overrides)
    from pretrain.methods import method_class  # (torch: not imported to build the parser, which edge installs use)

    method_class(cfg.method)  # an unknown --method: one line, before any data is read
    return cfg


def run_pretrain(args: argparse.Namespace) -> dict[str, Any]:
    from pretrain.trainer import Trainer

    cfg = config_from_args(args)
    trainer = Trainer(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    metrics = trainer.fit()
    if metrics:
        log.info("run written to %s", args.out)
        print(json.dumps(metrics, indent=2))
        print(f"RUN_DIR: {args.out}")
    return metrics


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="a RUN_DIR with backbone/")
    parser.add_argument("--data", default=None, help="training split for the kNN bank (default: the run's)")
    parser.add_argument("--eval-data", default=None, help="labelled test split (default: the run's)")
    parser.add_argument("--max-train", type=int, default=None, help="cap the kNN bank")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")


def run_eval(args: argparse.Namespace) -> dict[str, Any]:
    from pretrain.evaluate import evaluate_run

    result = evaluate_run(args.run_dir, data=args.data, eval_data=args.eval_data, max_train=args.max_train,
                          device=args.device)
    print(json.dumps(result, indent=2))
    return result
