"""Push an exported reward folder to the Hugging Face Hub (huggingface_hub's create_repo + upload_folder).

The token comes from the environment (HF_TOKEN) or a stored `hf auth login`; this module never takes it as an
argument and never prints it. `dry_run=True` touches no network: it lists the files that would be uploaded and
prints the model card.
"""
from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import HfApi, get_token

_TRUE = ("1", "true", "yes", "on")


def folder_files(folder: str | os.PathLike) -> list[tuple[str, int]]:
    """(relative path, bytes) of every file that an upload of `folder` sends, sorted."""
    root = Path(folder)
    return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))


def describe_push(folder: str | os.PathLike, repo_id: str, private: bool, revision: str | None) -> str:
    """What a push would do: target, files with sizes, and the model card (README.md) in full."""
    files = folder_files(folder)
    lines = [f"dry run: would push {len(files)} files from {folder} to https://huggingface.co/{repo_id} "
             f"({'private' if private else 'public'}, revision {revision or 'main'})"]
    lines += [f"  {name}  ({size:,} bytes)" for name, size in files]
    card = Path(folder) / "README.md"
    lines += ["", "----- README.md -----", card.read_text() if card.is_file() else "(no README.md: no model card)"]
    return "\n".join(lines)


def hub_api() -> HfApi:
    """The real Hub client, refusing early (with the fix) when the Hub is switched off or no token exists."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in _TRUE:
        raise RuntimeError("HF_HUB_OFFLINE=1: the Hub is switched off (recipes default to offline); prefix the "
                           "command with HF_HUB_OFFLINE=0 to push")
    if get_token() is None:
        raise RuntimeError("no Hugging Face token: set HF_TOKEN in the environment or run `hf auth login`")
    return HfApi()


def push_to_hub(folder: str | os.PathLike, repo_id: str | None, private: bool = True, revision: str | None = None,
                dry_run: bool = False, commit_message: str = "Upload harmlessness reward model (rlaif-uu)",
                api: HfApi | None = None) -> str:
    """Create the repo if needed (and the branch `revision`), upload the folder; returns the commit URL, or the
    dry-run description. `api` replaces the network client (tests)."""
    if not repo_id:
        raise ValueError("hub_model_id is required to push (e.g. --hub_model_id my-org/harmlessness-rm)")
    if not (Path(folder) / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: no config.json; export the reward model first")
    if dry_run:
        description = describe_push(folder, repo_id, private, revision)
        print(description)
        return description
    api = api or hub_api()
    api.create_repo(repo_id, private=private, repo_type="model", exist_ok=True)
    if revision and revision != "main":
        api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
    commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model", revision=revision,
                               commit_message=commit_message)
    url = str(getattr(commit, "commit_url", commit))
    print(f"pushed {len(folder_files(folder))} files to https://huggingface.co/{repo_id} ({url})")
    return url
