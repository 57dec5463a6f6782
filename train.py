"""Train a GaussianHead avatar from a monocular talking-head dataset.

    python train.py -s data/<id> -m output/<id> --eval

Every option is listed by ``python train.py --help`` and in the README.
"""

from training.launch import build_parser, main, train  # noqa: F401
from utils.errors import run_cli

if __name__ == "__main__":
    run_cli(main)
