"""train.py's command line: options, defaults of the schedule, and the run itself."""

from __future__ import annotations

import argparse

from arguments import (
    ModelParams,
    OptimizationParams,
    PipelineParams,
    add_compat_options,
    defaults,
    pop_compat_options,
    str2bool,
)
from scene.render_sets import render_novel_view
from scene.run_folder import checkpoint_options, read_checkpoint
from training.trainer import Trainer
from utils.cli import HelpFormatter
from utils.errors import OptionError

GROUPS = (ModelParams, OptimizationParams, PipelineParams)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train a GaussianHead avatar from a monocular "
                                "talking-head dataset.", allow_abbrev=False,
                                formatter_class=HelpFormatter)
    for g in GROUPS:
        g.add_to(p)
    run = p.add_argument_group("Run")
    run.add_argument("--test_iterations", nargs="+", type=int, default=argparse.SUPPRESS,
                     help="evaluate on the test frames at these iterations (default: halfway; "
                          "the last iteration always; needs --eval)")
    run.add_argument("--save_iterations", nargs="+", type=int, default=argparse.SUPPRESS,
                     help="save the model at these iterations (default: halfway; the last "
                          "iteration is always saved)")
    run.add_argument("--seed", type=int, default=argparse.SUPPRESS,
                     help="random seed of the initial points, derivations and frame order "
                          "(default: 0)")
    run.add_argument("--resume", nargs="?", const=True, type=str2bool, default=False,
                     metavar="true|false",
                     help="continue the run in -m from its checkpoint.pt (its options are "
                          "kept unless given again, e.g. a larger --iterations)")
    run.add_argument("--novel_view", nargs="?", const=True, type=str2bool, default=False,
                     metavar="true|false",
                     help="after training, also render the test expressions from a camera "
                          "orbiting the head (as render.py --novel_view)")
    run.add_argument("--time_limit", type=float, default=None, metavar="MINUTES",
                     help="a budget of this many minutes of training steps (evaluation and "
                          "saving not counted): the schedule of --iterations is fitted to it "
                          "(its phases and learning rates follow the share of the budget spent, "
                          "where that runs ahead of the iterations), and the run ends, evaluated "
                          "and saved, when the budget is spent or the iterations are done")
    run.add_argument("--quiet", nargs="?", const=True, type=str2bool, default=False,
                     metavar="true|false", help="no progress bar")
    run.add_argument("--tensorboard", nargs="?", const=True, type=str2bool, default=True,
                     metavar="true|false",
                     help="write TensorBoard logs to the run folder (default: true)")
    add_compat_options(p)
    return p


def default_test_iterations(iterations: int) -> list[int]:
    """Halfway (and, always with --eval, the last iteration)."""
    return [iterations // 2]


def default_save_iterations(iterations: int) -> list[int]:
    """Halfway (and, always, the last iteration)."""
    return [iterations // 2]


def train(argv: list[str] | None = None):
    """Parse ``argv``, train, and return the finished :class:`training.trainer.Trainer`."""
    args = vars(build_parser().parse_args(argv))
    for note in pop_compat_options(args):
        print(note)
    values = defaults(*GROUPS)
    values.update({"seed": 0})
    ckpt = None
    if args["resume"]:
        if not args.get("model_path"):
            raise OptionError("--resume needs -m with the run folder to continue.")
        ckpt = read_checkpoint(args["model_path"])
        values.update(checkpoint_options(ckpt))
    values.update(args)
    data = ModelParams.from_dict(values)
    opt = OptimizationParams.from_dict(values)
    pipe = PipelineParams.from_dict(values)
    test_its = values.get("test_iterations") or default_test_iterations(opt.iterations)
    save_its = values.get("save_iterations") or default_save_iterations(opt.iterations)

    trainer = Trainer(data, opt, pipe, test_iterations=test_its, save_iterations=save_its,
                      seed=values["seed"], quiet=values["quiet"], checkpoint=ckpt,
                      tensorboard=values["tensorboard"])
    limit = values.get("time_limit")
    trainer.final_metrics = trainer.run(None if limit is None else 60.0 * limit)
    if values["novel_view"]:
        d = render_novel_view(trainer.model, trainer.scene, trainer.model_path,
                              trainer.last_iteration,
                              trainer.backend, trainer.device, quiet=values["quiet"])
        print(f"novel-view video: {d / 'novel_view.mp4'}")
    return trainer


def main(argv: list[str] | None = None) -> int:
    trainer = train(argv)
    if trainer.final_metrics:
        print("final test: " + ", ".join(
            f"{k.upper()} {v:.4f}" for k, v in trainer.final_metrics.items()))
    return 0
