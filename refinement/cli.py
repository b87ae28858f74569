"""What every recipe shares at the command line: offline defaults, dataclass-field helpers, one-line errors for
mistakes the user can fix, and a quiet console with the full log in a file.

A recipe ends with::

    if __name__ == "__main__":
        run_recipe(main, make_parser().parse_args_and_config, log_file=run_log)

An expected error (bad data, a bad or clashing setting, priors the labels cannot support, a missing embedded-model
package, a missing path, a read-only or full disk) prints ``error: <what is wrong and how to fix it>`` and exits
with status 2; `--debug` or RLAIF_DEBUG=1 shows its traceback instead. Any other exception keeps its traceback:
it is a bug to report.

Under ``accelerate launch`` the recipe runs as a child process: accelerate exits with 1 whatever the child's status
and, unless launched with ``-q``/``--quiet``, follows the child's ``error:`` line with its own CalledProcessError
traceback. ``accelerate launch -q ...`` leaves the one line.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import field
from pathlib import Path

OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY")
DEBUG_ENV = "RLAIF_DEBUG"
DEBUG_FLAG = "--debug"
EXIT_USAGE = 2
UNSET = ("", "none", "null")
PROJECT_LOGGERS = ("refinement", "reward", "alignment", "__main__")
# Library messages that say nothing to the user of a recipe; they still go to the log file.
NOISE = (
    re.compile(r"The used dataset had no length, returning gathered tensors"),  # accelerate, once per batch
    re.compile(r"You are importing from 'trl\.experimental'"),  # PPO is pinned there on purpose
    re.compile(r"Failed to load CPU gemm_4bit_forward"),  # bitsandbytes on a CPU without the `kernels` package
    re.compile(r"^Failed to load JSON from file"),  # datasets, before the error that refinement.data reports
)
# transformers' load report of a classifier built on a backbone: the fresh head the code asked for.
HEADS = ("score.", "classifier.")
_REPORT_ROW = re.compile(r"^(\S+)\s*\|\s*([A-Z]+)\s*\|", re.MULTILINE)


class UsageError(ValueError):
    """A mistake the user fixes from the message alone: a bad or clashing setting, a missing input."""


def start_recipe() -> None:
    """Call first in a recipe, before any Hugging Face library is imported (they read these variables on import):
    the Hub is off unless the caller set HF_HUB_OFFLINE=0 ..., TRL's notice about its experimental PPO (pinned on
    purpose) is off, and the console is quiet from the first import on."""
    for name in OFFLINE_VARS:
        os.environ.setdefault(name, "1")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    root = logging.getLogger()
    if not any(isinstance(h, ConsoleHandler) for h in root.handlers):
        root.addHandler(ConsoleHandler())
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)


def option(default, text: str, **kwargs):
    """A dataclass field with command-line help text."""
    return field(default=default, metadata={"help": text}, **kwargs)


def named_folders(entries: Sequence[str] | None, flag: str) -> dict[str, str]:
    """`name=folder` command-line entries as a mapping; a malformed entry, a repeated name or none at all stops
    with one line naming the flag."""
    folders = {}
    for entry in entries or []:
        name, sep, path = entry.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"{flag} entry {entry!r}: expected name=folder")
        if name in folders:
            raise SystemExit(f"{flag}: the name {name!r} is used twice")
        folders[name] = path
    if not folders:
        raise SystemExit(f"{flag} is required: one or more name=folder entries")
    return folders


def unset(value) -> bool:
    """True for None and for what a command line or YAML writes for None: "", "none", "null" (any case)."""
    return value is None or (isinstance(value, str) and value.strip().lower() in UNSET)


def clear_unset(config, names: Sequence[str]) -> None:
    """Set each named string field that spells None ("none", "", ...) to None: argparse cannot write None."""
    for name in names:
        if unset(getattr(config, name)):
            setattr(config, name, None)


def fmt(value, digits: int = 3) -> str:
    """A number for a report table to `digits` places; anything else (None, a missing field) as a dash."""
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"


def run_log(args) -> Path | None:
    """<output_dir>/run.log: the full log of a recipe that adds to its output folder."""
    return Path(args.output_dir) / "run.log" if getattr(args, "output_dir", None) else None


def log_beside(args) -> Path | None:
    """<output_dir>.log: the full log of a recipe whose output folder holds only its results (replaced as a whole,
    or, for a refinement run, only finished round folders and JSON)."""
    return Path(f"{Path(args.output_dir)}.log") if getattr(args, "output_dir", None) else None


def expected_errors() -> tuple[type[BaseException], ...]:
    """The exception types whose message is the whole story for the user."""
    from .data import DataError
    from .embedded import MissingPackageError
    from .losses import MissingPseudoClassError
    from .priors import PriorError

    return DataError, PriorError, MissingPseudoClassError, MissingPackageError, UsageError


def error_line(err: BaseException | str) -> str:
    """``error: <message>`` on one line (a multi-line message is joined with " | ")."""
    text = err if isinstance(err, str) else str(err) or type(err).__name__
    return "error: " + " | ".join(part.strip() for part in text.strip().splitlines() if part.strip())


def debug_requested(argv: list[str]) -> bool:
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def run_recipe(main: Callable, parse: Callable[[list[str]], tuple], *,
               log_file: Callable[[object], str | Path | None] | None = None,
               argv: Sequence[str] | None = None):
    """Parse the command line, set up the console and log file, run ``main(*parsed)``; an expected error ends the
    process with one ``error:`` line and status 2. ``log_file(config)`` names the full log, ``config`` being the first
    parsed dataclass with an output_dir (a TRL recipe's training arguments hold it), else the first."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [arg for arg in argv if arg != DEBUG_FLAG]
    try:
        try:
            parsed = parse(argv)
        except (ValueError, OSError) as err:  # the YAML and the flags are the user's input, all of it
            raise UsageError(parse_error_text(err)) from err
        config = next((part for part in parsed if getattr(part, "output_dir", None)), parsed[0])
        path = log_file(config) if log_file else None
        configure_logging(Path(path) if path else None, verbose=debug)
        return main(*parsed)
    except SystemExit as stop:
        if debug or not isinstance(stop.code, str):
            raise
        _exit_with(stop.code)
    except expected_errors() as err:
        if debug:
            raise
        _exit_with(err)
    except OSError as err:
        if debug or not user_os_error(err):
            raise
        _exit_with(f"{err.filename}: {err.strerror}" if err.filename and err.strerror else str(err))


def user_os_error(err: OSError) -> bool:
    """A file problem the user fixes: a missing or existing path named in the message, no permission, a read-only
    or full disk, a file where a folder should be."""
    return isinstance(err, (FileNotFoundError, FileExistsError, PermissionError, NotADirectoryError,
                            IsADirectoryError)) or err.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT)


def parse_error_text(err: Exception) -> str:
    """What went wrong while reading the --config file and the flags, in the recipe user's terms."""
    unknown = re.match(r"Unknown arguments from config file: \[(.*)\]", str(err))
    if unknown:
        keys = [key.strip(" '") for key in unknown.group(1).split(",") if key.strip(" '").startswith("--")]
        return (f"the --config file has unknown key(s) {', '.join(k.removeprefix('--') for k in keys)}; "
                "--help lists the fields")
    return f"{err} (check the --config file and the flags)" if isinstance(err, OSError) else str(err)


def _exit_with(err: BaseException | str):
    line = error_line(err)
    logging.getLogger(__name__).error(line, extra={"file_only": True})  # the log file says why the run stopped
    if os.environ.get("RANK", "0") == "0":  # every rank meets the same bad input: one line, from the main one
        print(line, file=sys.stderr, flush=True)
    raise SystemExit(EXIT_USAGE)


# ---------------------------------------------------------------------------------------------------- logging


def fresh_head_report(message: str) -> bool:
    """True for a transformers LOAD REPORT whose only finding is a MISSING classification head (`score` of a decoder,
    `classifier` of a BERT-like encoder): the newly initialised head the code asked for."""
    if "LOAD REPORT" not in message:
        return False
    rows = [(key, status) for key, status in _REPORT_ROW.findall(message) if key != "Key"]
    return bool(rows) and all(key.startswith(HEADS) and status == "MISSING" for key, status in rows)


class ConsoleFilter(logging.Filter):
    """The console gets the project's INFO lines, other libraries' warnings and errors, and no known noise. A record
    logged with ``extra={"file_only": True}`` goes to the log file only."""

    def filter(self, record: logging.LogRecord) -> bool:
        ours = record.name.split(".")[0] in PROJECT_LOGGERS
        if getattr(record, "file_only", False) or record.levelno < (logging.INFO if ours else logging.WARNING):
            return False
        message = record.getMessage()
        return not (any(pattern.search(message) for pattern in NOISE) or fresh_head_report(message))


class ConsoleHandler(logging.StreamHandler):
    """stderr through ConsoleFilter."""

    def __init__(self):
        super().__init__(sys.stderr)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.addFilter(ConsoleFilter())


def configure_logging(log_file: Path | None = None, verbose: bool = False) -> None:
    """Console: the stages, the recipes' own progress bars, warnings that matter and errors (everything when
    ``verbose``). ``log_file``, when given: every INFO record of every library, appended. Library loggers that keep
    their own handlers (transformers, datasets) are routed here, the libraries' per-file progress bars are off, and
    Python warnings become log records, so a real warning still shows."""
    import datasets
    import huggingface_hub
    import torch
    import transformers

    start_recipe()
    transformers.utils.logging.disable_default_handler()
    transformers.utils.logging.enable_propagation()
    transformers.utils.logging.set_verbosity_info()
    datasets_logger = logging.getLogger("datasets")
    for handler in list(datasets_logger.handlers):
        datasets_logger.removeHandler(handler)
    datasets_logger.propagate = True
    datasets.utils.logging.set_verbosity_info()
    if not verbose:
        datasets.disable_progress_bars()  # one bar per map() or file read
        transformers.utils.logging.disable_progress_bar()  # one per checkpoint load or save
        huggingface_hub.utils.disable_progress_bars()
    if not torch.accelerator.is_available():  # DeepSpeed would warn that it found no GPU, on every CPU run
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, ConsoleHandler) and verbose:
            handler.filters.clear()
        elif not isinstance(handler, ConsoleHandler):
            root.removeHandler(handler)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
