"""nnU-Net v2's default trainer under a wall-clock training budget (for bench/vs_nnunet.py).

bench/vs_nnunet.py copies this file into the nnU-Net virtual environment as
`nnunetv2/training/nnUNetTrainer/nnUNetTrainer_AmosegBudget.py`, where
`nnUNetv2_train -tr nnUNetTrainer_AmosegBudget` (and `nnUNetv2_predict -tr ...`) find it
before their search descends into sub-packages. It imports nothing from amoseg: it runs
inside nnU-Net's environment.

Everything is nnU-Net's own default trainer (network, loss, augmentation, SGD with poly
learning rate, EMA-Dice "best" checkpoint, checkpoint_final.pth) except:

- iterations per epoch: at most AMOSEG_BENCH_ITERS (nnU-Net's 250 take far longer than a CPU
  budget); the first epoch ends its training iterations early once it has used
  budget / AMOSEG_BENCH_EPOCHS seconds, and that iteration count holds for every later epoch;
  validation iterations per epoch: AMOSEG_BENCH_VAL_ITERS (nnU-Net's default is 50);
- after the first epoch the number of epochs is set to floor(budget / first epoch's seconds)
  (capped by AMOSEG_BENCH_MAX_EPOCHS), and the poly schedule is stretched to that length, so
  the learning rate anneals within the budget as it would in a full nnU-Net run;
- the loop stops before an epoch that would end past AMOSEG_BENCH_BUDGET_S seconds, measured
  once the first training and validation batches have arrived: start-up, data-loader creation
  and the augmentation workers' warm-up are not counted (on a small CPU that alone can take
  minutes);
- nnU-Net's final validation of the fold (sliding-window prediction of every validation case)
  is skipped: the benchmark predicts its held-out test cases with nnUNetv2_predict instead.

It writes `amoseg_budget.json` (epochs run, loop seconds, budget) into the fold folder, and
with AMOSEG_BENCH_MARKS_S="300,600,..." (bench/curves.py) a `checkpoint_mark_<S>.pth` at the
end of the first epoch whose loop clock reaches each mark (a snapshot of one run: the learning
rate is where the budget's schedule has it then).
"""

from __future__ import annotations

import json
import os
from os.path import join
from time import perf_counter

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainer_AmosegBudget(nnUNetTrainer):
    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),
    ):
        super().__init__(plans, configuration, fold, dataset_json, device)
        env = os.environ
        self.budget_s = float(env.get("AMOSEG_BENCH_BUDGET_S", "600"))
        self.num_iterations_per_epoch = int(env.get("AMOSEG_BENCH_ITERS", "250"))
        self.num_val_iterations_per_epoch = int(env.get("AMOSEG_BENCH_VAL_ITERS", "50"))
        self.num_epochs = int(env.get("AMOSEG_BENCH_MAX_EPOCHS", "1000"))
        self.target_epochs = max(1, int(env.get("AMOSEG_BENCH_EPOCHS", "10")))
        marks = env.get("AMOSEG_BENCH_MARKS_S", "")
        self.marks_s = sorted(float(m) for m in marks.split(",") if m.strip())
        self.marks_hit: list[dict] = []

    def run_training(self) -> None:
        """nnU-Net's loop (on_train_start … on_train_end), bounded by the budget."""
        self.on_train_start()
        # warm-up: the augmentation workers' first batches
        first_batch, first_val = next(self.dataloader_train), next(self.dataloader_val)
        start = perf_counter()
        epochs_run = 0
        while self.current_epoch < self.num_epochs:
            self.on_epoch_start()
            self.on_train_epoch_start()
            train_outputs = []
            for i in range(self.num_iterations_per_epoch):
                batch = first_batch if first_batch is not None else next(self.dataloader_train)
                first_batch = None
                train_outputs.append(self.train_step(batch))
                first_epoch_full = perf_counter() - start > self.budget_s / self.target_epochs
                if epochs_run == 0 and first_epoch_full:
                    self.num_iterations_per_epoch = i + 1  # every epoch as long as this one
                    break
            self.on_train_epoch_end(train_outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                val_outputs = []
                for _ in range(self.num_val_iterations_per_epoch):
                    batch = first_val if first_val is not None else next(self.dataloader_val)
                    first_val = None
                    val_outputs.append(self.validation_step(batch))
                self.on_validation_epoch_end(val_outputs)
            self.on_epoch_end()
            epochs_run += 1
            elapsed = perf_counter() - start
            self.save_marks(elapsed, epochs_run, last=False)
            if epochs_run == 1:
                fit = max(1, int(self.budget_s // max(elapsed, 1e-6)))
                self.num_epochs = min(self.num_epochs, fit)
                self.lr_scheduler.max_steps = self.num_epochs
                self.print_to_log_file(
                    f"budget {self.budget_s:.0f} s, first epoch {elapsed:.1f} s "
                    f"({self.num_iterations_per_epoch} iterations): {self.num_epochs} epochs"
                )
            if elapsed + elapsed / epochs_run > self.budget_s:
                break
        seconds = perf_counter() - start
        self.save_marks(seconds, epochs_run, last=True)
        self.on_train_end()
        record = {
            "epochs": epochs_run,
            "planned_epochs": self.num_epochs,
            "loop_seconds": round(seconds, 3),
            "budget_seconds": self.budget_s,
            "iterations_per_epoch": self.num_iterations_per_epoch,
            "val_iterations_per_epoch": self.num_val_iterations_per_epoch,
            "batch_size": self.batch_size,
            "patch_size": list(self.configuration_manager.patch_size),
            "marks": self.marks_hit,
        }
        if self.local_rank == 0:
            with open(join(self.output_folder, "amoseg_budget.json"), "w") as f:
                json.dump(record, f, indent=1)

    def save_marks(self, elapsed: float, epochs: int, last: bool) -> None:
        """checkpoint_mark_<S>.pth for every mark the clock has reached (all left, at the
        end of the run: its final state stands for the marks it stopped short of)."""
        while self.marks_s and (elapsed >= self.marks_s[0] or last):
            mark = self.marks_s.pop(0)
            if self.local_rank == 0:
                self.save_checkpoint(join(self.output_folder, f"checkpoint_mark_{mark:g}.pth"))
            self.marks_hit.append({"mark_s": mark, "seconds": round(elapsed, 3), "epochs": epochs})

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        self.print_to_log_file("fold validation skipped: the benchmark scores held-out test cases")
