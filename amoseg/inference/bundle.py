"""ModelBundle: everything one trained model needs to segment a scan, however it travelled.

A run folder (`amoseg train --out RUN`) and a member of a model package (`*.amoseg.zip`)
hold the same three things, read here by one function (`read_bundles`):

    config.json          recipe, parameters, the store's configuration (its plan entry:
                         spacing, patch, normalisation, network) and modality
    checkpoint           the weights (run: checkpoint_best.pt; package: checkpoint.pt)
    postprocessing.json  the clean-up `amoseg cv` chose from the validation folds (optional)
    previous/            a cascade stage only (`3d_cascade_fullres`): the bundles of its
                         previous stage (the `3d_lowres` fold runs, copied by `train`), run
                         first on every scan (`amoseg.inference.cascade`)

Everything a segmenter decides comes from the bundle: the preprocessing (the plan's
`Preprocessor`, or S×S slices for `seed`), the recipe's inferer, the axes along which the
recipe was trained to be mirror-invariant (test-time mirroring uses only those) and the saved
post-processing. Nothing is probed from the model object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amoseg.atomic import read_json
from amoseg.errors import AmosegError
from amoseg.inference.postprocess import POSTPROCESSING_FILE, read_postprocessing

#: what makes a folder a (finished or checkpointed) training run
RUN_FILES = ("config.json", "checkpoint_best.pt")


@dataclass(frozen=True)
class ModelBundle:
    """One trained model as data: where it came from, its run config and its weights."""

    source: Path  # the run folder, or the package file
    member: str | None  # "members/<i>" inside a package; None for a run folder
    checkpoint: dict[str, Any]
    config: dict[str, Any]
    card: dict[str, Any] = field(default_factory=dict)
    #: the saved clean-up choice ({"lcc_organs": [...]}) or None when none was saved
    postprocessing: dict[str, Any] | None = None
    #: a cascade stage's previous-stage bundles, as read (a package's members); None: read
    #: from the run folder's previous/ when the configuration is a cascade stage
    previous: tuple[ModelBundle, ...] | None = None

    @property
    def name(self) -> str:
        return str(self.source if self.member is None else f"{self.source}!{self.member}")

    @property
    def recipe(self) -> str:
        return str(self.checkpoint["model"])

    @property
    def store(self) -> dict[str, Any]:
        store = self.config.get("store")
        return store if isinstance(store, dict) else {}

    @property
    def configuration_name(self) -> str:
        return str(self.store.get("configuration") or "seed")

    def configuration(self) -> Any:
        """The plan `Configuration` the model was trained on; None for `seed` (S×S slices
        at the checkpoint's input size)."""
        plan = self.store.get("plan")
        if self.configuration_name == "seed" or not plan:
            return None
        from amoseg.planning.plan import Configuration

        return Configuration.from_dict(self.configuration_name, plan, self.source)

    def preprocessor(self) -> Any:
        """The plan's `Preprocessor` for this model's modality (MR rules: no body crop, only
        for MR-only stores), or None for `seed`."""
        config = self.configuration()
        if config is None:
            return None
        return config.preprocessor("mr" if self.store.get("modality") == "mr" else "ct")

    @property
    def previous_stage(self) -> str | None:
        """The configuration whose prediction this stage's input adds (a cascade), or None."""
        plan = self.store.get("plan")
        return plan.get("previous_stage") if isinstance(plan, dict) else None

    def previous_bundles(self) -> tuple[ModelBundle, ...]:
        """A cascade stage's previous-stage bundles (none for a single stage): as given, or
        the run folder's previous/ (one line when it is missing)."""
        if self.previous_stage is None:
            return ()
        if self.previous is not None:
            return self.previous
        from amoseg.store.cascade import PREVIOUS_DIR

        folder = Path(self.source) / PREVIOUS_DIR
        runs = member_runs(folder) if self.member is None else []
        if not runs:
            raise AmosegError(
                f"this {self.configuration_name} model has no {self.previous_stage} stage "
                f"beside it ({PREVIOUS_DIR}/ is missing or empty)",
                folder,
                "train the cascade with `amoseg train`, which copies its previous stage there",
            )
        return tuple(run_bundle(run) for run in runs)

    @property
    def mirror_axes(self) -> tuple[int, ...]:
        """The spatial input axes the recipe trained invariant to (declared by the recipe
        class; none for the 2D recipes, which never flip)."""
        from amoseg.models.registry import model_class

        hparams = self.checkpoint.get("hparams") or {}
        return tuple(model_class(self.recipe).trained_mirror_axes(hparams))

    @property
    def lcc_organs(self) -> list[int] | None:
        if self.postprocessing is None:
            return None
        return list(self.postprocessing.get("lcc_organs", []))

    @property
    def synthetic(self) -> bool:
        """Trained on amoseg's synthetic phantoms (the run's store or the package's card)."""
        data = self.card.get("training_data")
        if isinstance(data, dict) and data.get("synthetic") is True:
            return True
        return self.store.get("synthetic") is True

    def model(self, device: str = "auto") -> Any:
        """The recipe's model with these weights, on `device`, for prediction and export
        only (`inference_only`: unet3d's network without MONAI)."""
        from amoseg.models.checkpoint import rebuild_model

        return rebuild_model(self.checkpoint, device, Path(self.name), inference=True)

    def open_backend(self, options: Any, mirror: bool) -> Any:
        """A torch scoring backend: the recipe's network and inferer, this bundle's
        preprocessing (the segmenter mirrors it along `mirror_axes` when asked)."""
        from amoseg.inference.backends import backend_for_model

        backend = backend_for_model(
            self.model(options.device), device=options.device, precision=options.precision
        )
        if not options.crop:
            backend.body_threshold = None
        backend.preprocessor = self.preprocessor()
        previous = self.previous_bundles()
        if not previous:
            return backend
        # a cascade: the previous stage first, then this one on [image, its labels]
        from amoseg.inference.cascade import CascadeBackend
        from amoseg.ops.tta import MirroredBackend

        full = (
            MirroredBackend(backend, self.mirror_axes) if mirror and self.mirror_axes else backend
        )
        first = [b.open_backend(options, mirror) for b in previous]
        first = [
            MirroredBackend(f, b.mirror_axes) if mirror and b.mirror_axes else f
            for f, b in zip(first, previous, strict=True)
        ]
        return CascadeBackend(full, first, backend.preprocessor, options.batch_size)


@dataclass(frozen=True)
class NnunetBundle:
    """An nnU-Net v2 trained model folder (dataset.json, plans.json, fold_*/checkpoint_*.pth):
    one more kind of bundle. It brings its own preprocessing, sliding window and mirroring
    axes (`amoseg.nnunet_models`), and covers the AMOS organs its class names map onto. A
    package member of kind nnunet is the same, its files read into memory (`packed`)."""

    source: Path
    member: str | None = None
    card: dict[str, Any] = field(default_factory=dict)
    store: dict[str, Any] = field(default_factory=dict)
    postprocessing: dict[str, Any] | None = None
    lcc_organs: list[int] | None = None
    synthetic: bool = False
    #: nnU-Net mirrors inside its own sliding window, on its checkpoint's axes
    mirror_axes: tuple[int, ...] = ()
    recipe: str = "nnunet"
    configuration_name: str = "nnunet"
    #: a package member's JSON files and checkpoints (`nnunet_member.PackedNnunet`)
    packed: Any = None

    @property
    def name(self) -> str:
        return str(self.source if self.member is None else f"{self.source}!{self.member}")

    def preprocessor(self) -> None:
        return None

    def open_backend(self, options: Any, mirror: bool) -> Any:
        from amoseg.nnunet_models import open_nnunet_model

        if self.packed is not None:
            return self.packed.open_backend(options, mirror)

        return open_nnunet_model(
            self.source, device=options.device, precision=options.precision,
            step_size=options.step_size, tta=mirror, previous_stage=options.previous_stage,
        )  # fmt: skip


def is_run(path: Path) -> bool:
    """A finished (or at least checkpointed) training run folder."""
    return path.is_dir() and all((path / f).is_file() for f in RUN_FILES)


def member_runs(path: str | Path) -> list[Path]:
    """The run folders `path` names: itself, or its sub-folders that are runs (sorted)."""
    path = Path(path)
    if is_run(path):
        return [path]
    if path.is_dir():
        return sorted(p for p in path.iterdir() if is_run(p))
    return []


def saved_choice(path: Path) -> dict[str, Any] | None:
    """A run's saved clean-up choice, checked (one line for a damaged file), or None."""
    return {"lcc_organs": read_postprocessing(path)} if path.is_file() else None


def run_bundle(run_dir: str | Path) -> ModelBundle:
    """The bundle of one run folder: its config.json, best checkpoint, saved clean-up."""
    from amoseg.models.checkpoint import load_checkpoint

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AmosegError("run folder not found", run_dir, "pass the OUT folder of `amoseg train`")
    ckpt_path = run_dir / "checkpoint_best.pt"
    if not ckpt_path.is_file():
        raise AmosegError(
            "no checkpoint_best.pt in the run folder",
            run_dir,
            "train a model into it first: amoseg train MODEL --out RUNDIR",
        )
    config_path = run_dir / "config.json"
    config = read_json(config_path, "run config.json") if config_path.is_file() else {}
    if not isinstance(config, dict):
        raise AmosegError("run config.json is not an object", config_path, "re-run training")
    return ModelBundle(
        source=run_dir,
        member=None,
        checkpoint=load_checkpoint(ckpt_path),
        config=config,
        postprocessing=saved_choice(run_dir / POSTPROCESSING_FILE),
    )


def read_bundles(path: str | Path) -> list[ModelBundle]:
    """Every model `path` names: a run folder, a folder of runs (e.g. all folds), a model
    package (each member) or an nnU-Net v2 model folder. One line for anything else."""
    from amoseg.inference.package import is_package, package_bundles
    from amoseg.nnunet_models import is_nnunet_model_dir

    path = Path(path)
    if is_package(path):
        return package_bundles(path)
    if is_nnunet_model_dir(path):
        return [NnunetBundle(path)]  # type: ignore[list-item]
    runs = member_runs(path)
    if runs:
        return [run_bundle(run) for run in runs]
    return [run_bundle(path)]  # says what is wrong with it
