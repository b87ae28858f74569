"""Atomic writes: a killed run leaves either the old file/folder or the new one, never half of one."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(obj, handle, indent=2, sort_keys=False, default=float)
        handle.write("\n")
    os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; results are meant to be shared
    os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def save_figure(fig, path: Path, dpi: int = 110) -> None:
    """Save a matplotlib figure atomically (a temp file renamed into place) and close it."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    tmp.replace(path)


@contextmanager
def atomic_dir(target: Path, replace: bool = False):
    """Yields a temp folder beside `target` and renames it to `target` when the block succeeds.

    With replace=False an existing target is an error: finished results are never overwritten."""
    if target.exists() and not replace:
        raise FileExistsError(f"{target} already exists; refusing to overwrite a finished result")
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.*.tmp"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    tmp.chmod(0o755)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def distributed_state():
    """accelerate's PartialState: one process unless launched with accelerate/torchrun (cheap, a singleton).

    On a machine without an accelerator it is built with cpu=True, as TrainingArguments builds it there
    (`use_cpu`): without it, PartialState ignores a torchrun launch on CPU (gloo) and reports one process.
    Not cached here: transformers.TrainingArguments resets and rebuilds it."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.accelerator.is_available()
                        or os.environ.get("ACCELERATE_USE_CPU", "false").lower() in ("1", "true", "yes"))


def wait_for_everyone() -> None:
    distributed_state().wait_for_everyone()


@contextmanager
def shared_atomic_dir(target: Path):
    """`atomic_dir(target)` for a run of one or more processes that all work in the same folder.

    One process: exactly `atomic_dir(target)`. Several (accelerate/torchrun ranks): the folder is
    `.<name>.tmp` beside `target`, the same path on every rank. The main process removes what a killed run
    left there and creates it; all ranks wait; the block runs on every rank (only the main process should
    write the results); all ranks wait; the main process renames the folder to `target`; all ranks wait
    again, so `target` exists everywhere on exit. An existing `target` is an error on every rank."""
    state = distributed_state()
    if state.num_processes == 1:
        with atomic_dir(target) as tmp:
            yield tmp
        return
    if target.exists():
        raise FileExistsError(f"{target} already exists; refusing to overwrite a finished result")
    tmp = target.with_name(f".{target.name}.tmp")
    if state.is_main_process:
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in [tmp, *target.parent.glob(f".{target.name}.*.tmp")]:  # left by a killed run
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
        tmp.chmod(0o755)
    state.wait_for_everyone()
    try:
        yield tmp
    except BaseException:
        if state.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    state.wait_for_everyone()
    if state.is_main_process:
        os.replace(tmp, target)
    state.wait_for_everyone()
