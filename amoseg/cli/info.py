"""`amoseg info`: versions and hardware, for bug reports and for checking a GPU is seen."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    app.command("info")(info)


def info() -> None:
    """Show amoseg's and its libraries' versions, the CPU threads and any GPU seen."""
    import os
    import platform

    import nibabel
    import numpy
    import torch
    from rich.console import Console
    from rich.table import Table

    from amoseg._version import __version__

    table = Table(show_header=False, box=None)
    rows = [
        ("amoseg", __version__),
        ("python", platform.python_version()),
        ("platform", platform.platform()),
        ("torch", torch.__version__),
        ("numpy", numpy.__version__),
        ("nibabel", nibabel.__version__),
        ("cpu cores", str(os.cpu_count())),
        ("torch threads", str(torch.get_num_threads())),
    ]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            rows.append((f"cuda:{i}", f"{props.name}, {props.total_memory / 2**30:.0f} GiB"))
        rows.append(("bf16 supported", str(torch.cuda.is_bf16_supported())))
    else:
        rows.append(("gpu", "none (CPU only)"))
    for key, value in rows:
        table.add_row(f"[bold]{key}[/bold]", value)
    Console(soft_wrap=True).print(table)
