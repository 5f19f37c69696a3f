"""Sending the folder somewhere: the Hugging Face Hub (HfApi) or any git remote (a self-hosted hub).

The token comes from HF_TOKEN and is never printed; credentials in a git URL are redacted from
every message.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


class PublishError(RuntimeError):
    """An upload that could not be done, with a message safe to print."""


def check_repo_id(repo_id: str) -> str:
    """`namespace/name`, as the Hub spells dataset ids."""
    if not REPO_ID.match(repo_id) or ".." in repo_id:
        raise ValueError(f"repo id must be NAMESPACE/NAME, not {repo_id!r}")
    return repo_id


def hub_token() -> str:
    """HF_TOKEN from the environment, or a clear error (the value is never shown)."""
    token = os.environ.get("HF_TOKEN", "").strip()
    if not token:
        raise PublishError(
            "HF_TOKEN is not set: export a Hugging Face token with write access "
            "(or use --folder-only / --git-remote URL)"
        )
    return token


def hub_endpoint() -> str | None:
    """HF_ENDPOINT when set (a mirror or self-hosted hub), else the Hub's default."""
    return os.environ.get("HF_ENDPOINT") or None


def _scrub(text: str, token: str) -> str:
    return text.replace(token, "***") if token else text


# A folder at least this large is uploaded with HfApi.upload_large_folder (resumable, many commits)
# where the installed huggingface_hub has it; from huggingface_hub 2 on, upload_folder itself is
# streamed, committed in batches and resumed by running it again.
LARGE_FOLDER_BYTES = 2 * 2**30
_LOCAL_CACHE = ".cache"  # upload_large_folder's resume state inside the folder


def folder_files(folder: Path) -> list[str]:
    """The folder's files as repo paths (its upload cache excluded)."""
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.relative_to(folder).parts[0] != _LOCAL_CACHE
    )


def is_large(folder: Path) -> bool:
    return sum((folder / f).stat().st_size for f in folder_files(folder)) >= LARGE_FOLDER_BYTES


def upload_to_hub(
    folder: Path, repo_id: str, *, private: bool, message: str, large: bool | None = None
) -> str:
    """create_repo (exist_ok), then the folder: upload_large_folder when `large` (None: when it
    holds LARGE_FOLDER_BYTES or more) and the installed huggingface_hub has it, else
    upload_folder. Remote files the folder lacks are deleted (stale shards would otherwise match
    a config's `split-*` pattern). An interrupted upload resumes by running it again. Returns the
    commit (or repo) URL."""
    from huggingface_hub import HfApi

    token = hub_token()
    api = HfApi(endpoint=hub_endpoint(), token=token)
    large = is_large(folder) if large is None else large
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        if large and hasattr(api, "upload_large_folder"):
            api.upload_large_folder(
                repo_id=repo_id, folder_path=str(folder), repo_type="dataset", private=private
            )
            return _delete_stale(api, folder, repo_id, message)
        info = api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="dataset",
            commit_message=message,
            delete_patterns=["*"],
        )
    except Exception as exc:  # the hub's errors can quote request headers: scrub the token
        raise PublishError(_scrub(f"upload to {repo_id} failed: {exc}", token)) from None
    return str(getattr(info, "commit_url", info))


def _delete_stale(api: object, folder: Path, repo_id: str, message: str) -> str:
    """One commit deleting the remote files the folder lacks; the repo's URL."""
    from huggingface_hub import CommitOperationDelete

    remote = api.list_repo_files(repo_id, repo_type="dataset")  # type: ignore[attr-defined]
    stale = sorted(set(remote) - set(folder_files(folder)))
    if stale:
        api.create_commit(  # type: ignore[attr-defined]
            repo_id,
            repo_type="dataset",
            operations=[CommitOperationDelete(path) for path in stale],
            commit_message=f"{message}: remove files no longer published",
        )
    return f"{hub_endpoint() or 'https://huggingface.co'}/datasets/{repo_id}"


def redact(url: str) -> str:
    """`https://user:secret@host/x` -> `https://***@host/x`."""
    return _CREDENTIALS.sub("***@", url)


def _git(args: list[str], env: dict[str, str], remote: str) -> subprocess.CompletedProcess:
    cwd = env["GIT_WORK_TREE"]
    proc = subprocess.run(["git", *args], env=env, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        detail = redact((proc.stderr or proc.stdout).strip()).replace(remote, redact(remote))
        raise PublishError(f"git {args[0]} failed: {detail}")
    return proc


# Stored through git-LFS on a git remote: the Parquet shards, figures and any media file.
LFS_PATTERNS = ("*.parquet", "*.png", "*.jpg", "*.jpeg", "*.flac", "*.mp3", "*.ogg", "*.wav")


def write_gitattributes(folder: Path) -> Path:
    """FOLDER/.gitattributes: LFS_PATTERNS go through git-LFS (as on the Hub)."""
    path = folder / ".gitattributes"
    path.write_text("".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS))
    return path


def _uses_lfs(folder: Path) -> bool:
    attributes = folder / ".gitattributes"
    return attributes.exists() and "filter=lfs" in attributes.read_text()


def push_to_git(
    folder: Path, remote: str, *, message: str, branch: str = "main", date: str | None = None
) -> str:
    """Commit the folder's exact content on top of the remote branch (if any) and push it.

    The commit's tree is the folder (files it lacks are removed); nothing is pushed when the
    tree is unchanged. Files the folder's .gitattributes sends through git-LFS are committed as
    LFS pointers and their objects pushed to the remote's LFS store first (`git lfs push`).
    `date` (ISO 8601) fixes the commit dates, so the same folder pushed onto the same parent
    gives the same commit. Returns the commit id.
    """
    if "://" not in remote and Path(remote).exists():
        remote = str(Path(remote).resolve())  # git runs inside the folder
    with tempfile.TemporaryDirectory(prefix="biovita-publish-git-") as tmp:
        env = {
            **os.environ,
            "GIT_DIR": str(Path(tmp) / "git"),
            "GIT_WORK_TREE": str(folder.resolve()),
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_AUTHOR_NAME": "biovita-data publish",
            "GIT_AUTHOR_EMAIL": "biovita@localhost",
            "GIT_COMMITTER_NAME": "biovita-data publish",
            "GIT_COMMITTER_EMAIL": "biovita@localhost",
        }
        if date:
            env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = date
        _git(["init", "-q"], env, remote)
        _git(["config", "core.autocrlf", "false"], env, remote)
        lfs = _uses_lfs(folder)
        if lfs:
            if subprocess.run(["git", "lfs", "version"], capture_output=True).returncode != 0:
                raise PublishError("git-lfs is not installed (apt install git-lfs)")
            _git(["lfs", "install", "--local", "--skip-smudge"], env, remote)
        parent = None
        if _git(["ls-remote", remote, f"refs/heads/{branch}"], env, remote).stdout.strip():
            _git(["fetch", "-q", "--depth", "1", remote, branch], env, remote)
            parent = _git(["rev-parse", "FETCH_HEAD"], env, remote).stdout.strip()
        _git(["add", "-A", "."], env, remote)
        tree = _git(["write-tree"], env, remote).stdout.strip()
        if parent:
            old_tree = _git(["rev-parse", f"{parent}^{{tree}}"], env, remote).stdout.strip()
            if old_tree == tree:
                return parent
        args = ["commit-tree", tree, "-m", message] + (["-p", parent] if parent else [])
        commit = _git(args, env, remote).stdout.strip()
        if lfs:
            _git(["update-ref", "refs/heads/publish", commit], env, remote)
            _git(["lfs", "push", remote, "publish"], env, remote)
        _git(["push", "-q", "--no-verify", remote, f"{commit}:refs/heads/{branch}"], env, remote)
        return commit
