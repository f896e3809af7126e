"""`train --precision`: bf16 autocast + channels_last training on CPUs with native bf16 (and
GPUs), fp32 elsewhere; the bf16 forward of a fixed model labels like the fp32 one."""

from __future__ import annotations

import pytest
import torch

from amoseg.atomic import read_json
from amoseg.cli.main import main
from amoseg.inference.backends import native_bf16
from amoseg.models.torch_model import trains_bf16
from amoseg.store.slice_store import SliceStore
from amoseg.training import TrainSettings, load_run, train
from tests.tiny_store import make_tiny_store

TINY = {"base": 8, "depth": 2}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_tiny_store(tmp_path_factory.mktemp("tiny") / "store")


def settings(**kw) -> TrainSettings:
    base = {"epochs": 3, "device": "cpu", "progress": False, "hparams": TINY, "batch_size": 4}
    return TrainSettings(**(base | {"lr": 1e-2} | kw))


def test_bf16_forward_gives_the_fp32_labels_of_a_fixed_model(store, tmp_path):
    train("unet", store, tmp_path / "run", settings(precision="fp32"))
    model = load_run(tmp_path / "run", device="cpu", which="latest")
    st = SliceStore(store)
    x = torch.from_numpy(st.image(st.cases("val")[0]).astype("float32"))
    x = torch.stack([x.roll(1, 0), x, x.roll(-1, 0)], 1)  # 2.5D context 1: (Z, 3, S, S)
    model.net.eval()
    with torch.no_grad():
        fp32 = model.net(x).argmax(1)
        assert model.set_precision("bf16") == "bf16" and model.use_bf16
        with model.train_autocast():
            out = model.net(x.contiguous(memory_format=model.memory_format))
    assert out.dtype == torch.bfloat16  # the path really ran in bf16
    agree = (out.float().argmax(1) == fp32).float().mean().item()
    assert agree >= 0.99, agree
    assert (fp32 > 0).any()  # the model segments something: agreement is not all background


def test_auto_follows_the_recipe_and_the_cpu():
    cpu = torch.device("cpu")
    assert trains_bf16("auto", cpu, recipe_bf16=True) == native_bf16(cpu)
    assert trains_bf16("auto", cpu, recipe_bf16=False) is False
    assert trains_bf16("bf16", cpu, recipe_bf16=False) is True
    assert trains_bf16("fp32", cpu, recipe_bf16=True) is False


def test_bf16_run_learns_and_records_its_precision(store, tmp_path):
    losses: list[float] = []
    summary = train(
        "unet",
        store,
        tmp_path / "bf16",
        settings(precision="bf16"),
        on_epoch=lambda e, m: losses.append(m["train_loss"]),
    )
    assert losses[-1] < losses[0], losses
    assert summary["precision"] == "bf16"
    config = read_json(tmp_path / "bf16" / "config.json")
    assert config["precision"] == "bf16" and config["settings"]["precision"] == "bf16"
    fp32 = train("unet-seed", store, tmp_path / "seed", settings(epochs=1, hparams=TINY))
    assert fp32["precision"] == "fp32"  # auto: the report's recipe trains in fp32


def test_bad_precision_is_one_line_exit_2(store, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "unet", "--data", str(store), "--out", str(tmp_path / "r"),
              "--precision", "fp16"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and "--precision" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()
