"""Several nnU-Net predictions in one process (run with the python of `.venv-nnunet`): the
code path of `nnUNetv2_predict_from_modelfolder` (nnUNetPredictor, without its worker
processes), paying nnU-Net's start-up once.

    python nnunet_predict_many.py SPEC.json

SPEC: {"runs": [{"scan": path, "model": dir, "folds": ["0"], "tta": false, "out": dir}]}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    for run in spec["runs"]:
        predictor = nnUNetPredictor(
            tile_step_size=0.5, use_gaussian=True, use_mirroring=run["tta"],
            perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False,
        )  # fmt: skip
        predictor.initialize_from_trained_model_folder(
            run["model"], tuple(run["folds"]), "checkpoint_final.pth"
        )
        Path(run["out"]).mkdir(parents=True, exist_ok=True)
        predictor.predict_from_files_sequential(
            [[run["scan"]]], [str(Path(run["out"]) / "case")], save_probabilities=True
        )


if __name__ == "__main__":
    main(sys.argv[1])
