"""README and docs name the demo's folders as the demo writes them (`runs/demo/runs/unet`,
not `runs/unet`), so their examples run as written after `amoseg demo`."""

from __future__ import annotations

import inspect
import re
import shlex
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath

import pytest

from amoseg.data.synth import SPLIT_FOLDERS, case_plan
from amoseg.models.registry import ladder_names
from amoseg.reports import demo

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DEMO_PATH = re.compile(r"(?<![\w/.-])runs/demo(?:/[^\s`'\")\]]*)?(?![\w-])")
REPORT_FILES = ("comparison.", "timings.json")
PRODUCERS = {"train", "tune", "demo"}  # their --out is a run (or demo) folder
CONSUMERS = {"predict", "export", "view", "evaluate", "cv", "compare"}  # they read run folders


def demo_layout_problem(path: str) -> str | None:
    """Why `path` (under runs/demo) is not something the demo writes, or None."""
    parts = PurePosixPath(path.rstrip(".,;:")).parts
    base = demo.DEFAULT_OUT.parts
    if parts[: len(base)] != base:
        return f"not under {demo.DEFAULT_OUT}"
    rest = parts[len(base) :]
    if not rest:
        return None
    folders = (demo.AMOS_DIR, demo.STORE_DIR, demo.RUNS_DIR, demo.REPORT_DIR, demo.STAGES_DIR)
    if rest[0] not in folders:
        return f"the demo writes no {rest[0]!r} folder (only {', '.join(folders)})"
    if rest[0] == demo.RUNS_DIR and len(rest) > 1 and rest[1] not in (*ladder_names(), "<model>"):
        return f"the demo trains no model {rest[1]!r}"
    if rest[0] == demo.REPORT_DIR and len(rest) > 1 and not rest[1].startswith(REPORT_FILES):
        return f"the demo's report has no {rest[1]!r}"
    if rest[0] == demo.AMOS_DIR and len(rest) > 2 and rest[2] != "*.nii.gz":
        split = next((k for k, pair in SPLIT_FOLDERS.items() if rest[1] in pair), None)
        plan = case_plan(demo.DemoOptions().cases, demo.SEED, demo.DemoOptions().modality)
        names = {f"amos_{i:04d}.nii.gz" for i, _, s in plan if s == split}
        if rest[2] not in names:
            return f"the demo's {rest[1]} holds {sorted(names)}, not {rest[2]}"
    return None


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block, indented ones (in list items) too."""
    blocks = re.findall(r"^[ \t]*```(\w*)\n(.*?)^[ \t]*```", text, re.M | re.S)
    return [(lang, body) for lang, body in blocks]


def commands(body: str) -> list[list[str]]:
    """The `amoseg` command lines of a shell block as word lists (comments and line
    continuations resolved, `a && b` split, `$k` kept as a wildcard)."""
    out = []
    for line in body.replace("\\\n", " ").splitlines():
        line = re.sub(r"(^|\s)#.*", "", line)
        for part in re.split(r"&&|;", line):
            words = shlex.split(re.sub(r"\$\w+", "*", part.replace("$(", "(")), posix=True)
            if words[:1] == ["amoseg"] and len(words) > 1:
                out.append(words)
    return out


def out_of(words: list[str]) -> str | None:
    for flag in ("--out", "-o"):
        if flag in words[:-1]:
            return words[words.index(flag) + 1].rstrip("/")
    return None


def related(used: str, made: str) -> bool:
    used, made = used.rstrip("/"), made.rstrip("/")
    return (
        fnmatch(used, made)
        or fnmatch(made, used)
        or used.startswith(made + "/")
        or made.startswith(used + "/")
    )


def test_demo_defaults_are_the_documented_ones():
    from amoseg.cli.demo import demo as demo_command

    assert inspect.signature(demo_command).parameters["out"].default.default == demo.DEFAULT_OUT
    assert demo.DemoOptions().out == demo.DEFAULT_OUT


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_demo_path_in_the_docs_is_one_the_demo_writes(doc):
    for match in DEMO_PATH.finditer(doc.read_text(encoding="utf-8")):
        problem = demo_layout_problem(match[0])
        assert problem is None, f"{doc.name}: {match[0]}: {problem}"


def test_readme_commands_use_runs_that_exist_when_they_run():
    """A README block that trains nothing names the demo's runs (the only ones a new user
    has); a block that trains may also use the runs it, or an earlier block, made."""
    made: list[str] = []
    checked = []
    for lang, body in code_blocks((ROOT / "README.md").read_text(encoding="utf-8")):
        if lang == "python":
            used = [(m, "amoseg.load") for m in re.findall(r"amoseg\.load\(\"([^\"]+)\"", body)]
            trains = False
        elif lang in ("bash", "sh", ""):
            lines = commands(body)
            here = [out_of(w) for w in lines if w[1] in PRODUCERS]
            made += [p for p in here if p]
            trains = any(here)
            used = [(w_, " ".join(w[:2])) for w in lines if w[1] in CONSUMERS for w_ in w[2:]]
        else:
            continue
        for path, command in used:
            if not path.startswith("runs/"):
                continue
            checked.append(path)
            if demo_layout_problem(path) is None:
                continue
            assert trains and any(related(path, m) for m in made), (
                f"README: `{command} {path}` names a run that exists neither after "
                f"`amoseg demo` ({demo.DEFAULT_OUT}/{demo.RUNS_DIR}/<model>) nor from a "
                "command above it"
            )
    assert len(checked) >= 10 and any(p.startswith("runs/demo/runs/") for p in checked)


@pytest.mark.parametrize(
    "path, ok",
    [
        ("runs/demo/runs/unet", True),
        ("runs/demo/report/comparison.png", True),
        ("runs/demo/amos/imagesTs/amos_0046.nii.gz", True),
        ("runs/demo/unet", False),
        ("runs/demo/runs/unet9", False),
        ("runs/demo/amos/imagesTs/amos_0001.nii.gz", False),
        ("runs/unet", False),
    ],
)
def test_the_layout_check_itself(path, ok):
    assert (demo_layout_problem(path) is None) == ok


def test_readme_pictures_exist_and_stay_small():
    pictures = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", (ROOT / "README.md").read_text("utf-8"))
    assert {"docs/img/comparison.png", "docs/img/viewer.png"} <= set(pictures)
    for picture in pictures:
        path = ROOT / picture
        assert path.is_file(), picture
        assert path.stat().st_size < 300_000, f"{picture}: {path.stat().st_size} bytes"
