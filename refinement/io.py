"""Atomic writes (a killed run leaves either the old file/folder or the new one, never half of one), and the
process helpers of a multi-process launch: the shared state, a shared workspace, work sharded across ranks."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np


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


def length_shard(lengths: Sequence[int], num_shards: int, shard: int) -> np.ndarray:
    """Positions of shard `shard` of `num_shards`: the items sorted by length (stable), dealt out in turn.

    Dealing the sorted order (rather than cutting it into blocks) gives every shard the same mix of short and
    long items, so no rank waits on the longest ones; within a shard, neighbours have similar lengths, so
    batches of consecutive positions need little padding. The shards are disjoint and together cover every
    position once."""
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} is outside 0..{num_shards - 1}")
    return np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")[shard::num_shards]


def assemble_shards(parts: Sequence[tuple[np.ndarray, np.ndarray]], num_items: int) -> np.ndarray:
    """Rows in input order from (positions, rows) pairs; every position must come exactly once."""
    positions = np.concatenate([np.asarray(p, dtype=np.int64) for p, _ in parts])
    counts = np.bincount(positions, minlength=num_items) if len(positions) else np.zeros(num_items, np.int64)
    if len(counts) != num_items or not np.all(counts == 1):
        missing, repeated = np.flatnonzero(counts[:num_items] == 0), np.flatnonzero(counts > 1)
        raise ValueError(f"shards do not cover {num_items} items exactly once: {len(missing)} missing, "
                         f"{len(repeated)} repeated, {int(np.sum(counts[num_items:]))} out of range")
    rows = np.concatenate([np.asarray(r) for _, r in parts])
    ordered = np.empty_like(rows)
    ordered[positions] = rows
    return ordered


def map_by_length(compute: Callable[[np.ndarray], np.ndarray], lengths: Sequence[int],
                  across_processes: bool = True) -> np.ndarray:
    """`compute(positions)` (one row per position, in the order given) for every item, returned in input order.

    Under a multi-process launch with `across_processes`, each process computes its `length_shard` only and
    every process receives all rows (gathered once, in no duplicated or padded form); all processes must call
    this together with the same `lengths`. Otherwise this process computes every row, in length order."""
    from accelerate.utils import gather_object

    state = distributed_state()
    if not across_processes or state.num_processes == 1:
        positions = length_shard(lengths, 1, 0)
        return assemble_shards([(positions, compute(positions))], len(lengths))
    positions = length_shard(lengths, state.num_processes, state.process_index)
    return assemble_shards(gather_object([(positions, compute(positions))]), len(lengths))
