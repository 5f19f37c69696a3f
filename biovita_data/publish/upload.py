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
TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


class PublishError(RuntimeError):
    """An upload that could not be done, with a message safe to print."""


def check_repo_id(repo_id: str) -> str:
    """`namespace/name`, as the Hub spells dataset ids."""
    if not REPO_ID.match(repo_id) or ".." in repo_id:
        raise ValueError(f"repo id must be NAMESPACE/NAME, not {repo_id!r}")
    return repo_id


def check_tag(tag: str) -> str:
    """A release tag: letters, digits, `.`, `_`, `-` (e.g. v2026.12), as git and the Hub take it."""
    if not TAG.match(tag) or ".." in tag or tag.endswith((".", ".lock")):
        raise ValueError(
            f"--tag must be letters, digits, '.', '_' or '-' (e.g. v2026.12), not {tag!r}"
        )
    return tag


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
    folder: Path,
    repo_id: str,
    *,
    private: bool,
    message: str,
    large: bool | None = None,
    tag: str | None = None,
) -> str:
    """create_repo (exist_ok), then the folder: upload_large_folder when `large` (None: when it
    holds LARGE_FOLDER_BYTES or more) and the installed huggingface_hub has it, else
    upload_folder. Remote files the folder lacks are deleted (stale shards would otherwise match
    a config's `split-*` pattern). An interrupted upload resumes by running it again. With `tag`,
    the commit uploaded is tagged (a tag already on that commit is fine; on another, an error).
    Returns the commit (or repo) URL."""
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
            url = _delete_stale(api, folder, repo_id, message)
            if tag:
                _tag_hub(api, repo_id, tag, None)
            return url
        info = api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="dataset",
            commit_message=message,
            delete_patterns=["*"],
        )
        if tag:
            _tag_hub(api, repo_id, tag, getattr(info, "oid", None))
    except PublishError:
        raise
    except Exception as exc:  # the hub's errors can quote request headers: scrub the token
        raise PublishError(_scrub(f"upload to {repo_id} failed: {exc}", token)) from None
    return str(getattr(info, "commit_url", info))


def _tag_hub(api: object, repo_id: str, tag: str, commit: str | None) -> None:
    """Tag `commit` (None: the head of main) of a Hub dataset repo; a tag already there must name
    the same commit (a release never moves)."""
    refs = api.list_repo_refs(repo_id, repo_type="dataset")  # type: ignore[attr-defined]
    existing = {t.name: t.target_commit for t in getattr(refs, "tags", [])}
    if commit is None:
        commit = next(b.target_commit for b in refs.branches if b.name == "main")
    if tag in existing:
        if existing[tag] != commit:
            raise PublishError(
                f"tag {tag} of {repo_id} already names commit {existing[tag][:12]}: a release "
                "never moves; publish under a new --tag"
            )
        return
    api.create_tag(  # type: ignore[attr-defined]
        repo_id, tag=tag, revision=commit, repo_type="dataset", tag_message=f"Release {tag}"
    )


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
    folder: Path,
    remote: str,
    *,
    message: str,
    branch: str = "main",
    date: str | None = None,
    tag: str | None = None,
) -> str:
    """Commit the folder's exact content on top of the remote branch (if any) and push it.

    The commit's tree is the folder (files it lacks are removed); nothing is pushed when the
    tree is unchanged. Files the folder's .gitattributes sends through git-LFS are committed as
    LFS pointers and their objects pushed to the remote's LFS store first (`git lfs push`).
    `date` (ISO 8601) fixes the commit dates, so the same folder pushed onto the same parent
    gives the same commit. With `tag`, the commit is also pushed as `refs/tags/TAG` (a tag that
    names another commit on the remote is an error: a release never moves). Returns the commit.
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
        # a named remote: the fetch leaves refs/remotes/target/<branch>, which tells `git lfs
        # push` the objects the remote already has (else it asks for the parent's too: missing)
        _git(["remote", "add", "target", remote], env, remote)
        if _git(["ls-remote", remote, f"refs/heads/{branch}"], env, remote).stdout.strip():
            _git(["fetch", "-q", "--depth", "1", "target", branch], env, remote)
            parent = _git(["rev-parse", "FETCH_HEAD"], env, remote).stdout.strip()
        _git(["add", "-A", "."], env, remote)
        tree = _git(["write-tree"], env, remote).stdout.strip()
        if tag:
            listed = _git(["ls-remote", remote, f"refs/tags/{tag}"], env, remote).stdout.split()
            tagged = listed[0] if listed else None
        if parent:
            old_tree = _git(["rev-parse", f"{parent}^{{tree}}"], env, remote).stdout.strip()
            if old_tree == tree:
                if tag:
                    _push_tag(env, remote, parent, tag, tagged)
                return parent
        args = ["commit-tree", tree, "-m", message] + (["-p", parent] if parent else [])
        commit = _git(args, env, remote).stdout.strip()
        if tag and tagged is not None:  # refuse before moving the branch
            _push_tag(env, remote, commit, tag, tagged)
        if lfs:
            _git(["update-ref", "refs/heads/publish", commit], env, remote)
            _git(["lfs", "push", "target", "publish"], env, remote)
        _git(["push", "-q", "--no-verify", remote, f"{commit}:refs/heads/{branch}"], env, remote)
        if tag:
            _push_tag(env, remote, commit, tag, tagged)
        return commit


def _push_tag(env: dict[str, str], remote: str, commit: str, tag: str, tagged: str | None) -> None:
    """Push `commit` as refs/tags/TAG unless the remote has it already; another commit there is
    an error."""
    if tagged == commit:
        return
    if tagged is not None:
        raise PublishError(
            f"tag {tag} on {redact(remote)} already names commit {tagged[:12]}: a release never "
            "moves; publish under a new --tag"
        )
    _git(["push", "-q", "--no-verify", remote, f"{commit}:refs/tags/{tag}"], env, remote)
