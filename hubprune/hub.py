"""Publishing a pruned model folder to the Hub (or any Hub-compatible endpoint) with huggingface_hub.

One `upload_folder` call: the Hub turns it into one commit, or into none when nothing changed (the
client compares each file's hash with the remote one first), so a second push of the same result is a
no-op. An interrupted upload publishes nothing (a commit is all or nothing) and the same call resumes:
LFS objects already stored are not sent again. The token comes from the caller, `HF_TOKEN` or the saved
`hf auth login`, and is never printed or written anywhere.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from .errors import AuthenticationError, HubPruneError, InvalidOptionError

log = logging.getLogger("hubprune")

# Never uploaded: run folders, temporary files, caches.
IGNORE_PATTERNS = [".*", "**/.*", "__pycache__/*", "*.tmp"]


class PublishError(HubPruneError):
    """The upload failed or was refused; nothing was published."""


@dataclass
class PublishResult:
    repo_id: str
    url: str
    revision: str
    commit: str | None  # the head commit after the push (None in a dry run)
    changed: bool  # whether this push made a commit
    files: list[str] = field(default_factory=list)
    dry_run: bool = False


def check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise InvalidOptionError(f"--repo-id {repo_id!r} is not a valid repo id ({exc}); use NAMESPACE/NAME") from None
    if "/" not in repo_id:
        raise InvalidOptionError(f"--repo-id {repo_id!r}: give the namespace too, NAMESPACE/NAME (e.g. your user name)")


def check_transfer_protocol(endpoint: str | None) -> None:
    """Uploads go through Xet by default, a storage service only the Hugging Face Hub runs: against any
    other endpoint (the bundled local server, `hubprune.testing.hub_server`) they fail, and retrying
    fails the same way. Say what to set instead."""
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    url = endpoint or constants.ENDPOINT
    host = urlsplit(url).hostname or ""
    if not constants.HF_HUB_DISABLE_XET and host != "huggingface.co" and not host.endswith(".huggingface.co"):
        raise InvalidOptionError(f"{url} is not the Hugging Face Hub, and uploads would use Xet storage, which only "
                                 "the Hub serves: set HF_HUB_DISABLE_XET=1 in the environment (uploads then use the "
                                 "LFS protocol) and run again")


def resolve_token(token: str | None) -> str:
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise AuthenticationError("no Hub token: set HF_TOKEN, run `hf auth login`, or pass --token "
                                  "(a token with write access to the target namespace)")
    return token


def files_to_publish(folder: Path, ignore: list[str] | None = None) -> list[str]:
    from fnmatch import fnmatch

    patterns = IGNORE_PATTERNS + (ignore or [])
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return [f for f in files if not any(fnmatch(f, pattern) for pattern in patterns)]


def whoami(api) -> str:
    """The token's user name; fails early, before any expensive work, on a missing or bad token."""
    from huggingface_hub import errors as hub_errors

    try:
        return api.whoami()["name"]
    except hub_errors.HfHubHTTPError as exc:
        raise AuthenticationError(f"{api.endpoint} refused the token ({_status(exc)}): set a valid one with "
                                  "HF_TOKEN, `hf auth login` or --token") from None
    except Exception as exc:  # noqa: BLE001 - network
        raise PublishError(f"cannot reach {api.endpoint} ({type(exc).__name__}); check the network or --endpoint") from None


def _status(exc) -> str:
    response = getattr(exc, "response", None)
    return f"HTTP {response.status_code}" if response is not None else type(exc).__name__


def hub_api(token: str | None, endpoint: str | None):
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint, token=token)


def publish_folder(folder: str | Path, repo_id: str, *, token: str | None = None, private: bool = False,
                   revision: str | None = None, commit_message: str | None = None, endpoint: str | None = None,
                   dry_run: bool = False, ignore: list[str] | None = None, replace: str | None = None) -> PublishResult:
    """Upload `folder` to `repo_id` (created if missing) on branch `revision` (created if missing).
    `ignore`: more patterns not to upload. `replace`: a file only hubprune writes on that branch; the
    branch then holds exactly the folder afterwards (files it lacks are deleted in the same commit), and
    an existing branch without that file is never touched."""
    from huggingface_hub import errors as hub_errors

    folder = Path(folder)
    check_repo_id(repo_id)
    files = files_to_publish(folder, ignore)
    branch = revision or "main"
    api = hub_api(None if dry_run else resolve_token(token), endpoint)
    url = f"{api.endpoint}/{repo_id}"
    if dry_run:
        return PublishResult(repo_id, url, branch, None, False, files, dry_run=True)
    whoami(api)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if replace:
            check_replaceable(api, repo_id, branch, replace)
        if branch != "main":
            api.create_branch(repo_id, branch=branch, exist_ok=True)
        before = api.model_info(repo_id, revision=branch).sha
        api.upload_folder(folder_path=folder, repo_id=repo_id, revision=branch, ignore_patterns=IGNORE_PATTERNS + (ignore or []),
                          delete_patterns=["*"] if replace else None,
                          commit_message=commit_message or f"Upload {folder.name} with hubprune")
        after = api.model_info(repo_id, revision=branch).sha
    except hub_errors.HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403) or isinstance(exc, hub_errors.RepositoryNotFoundError):
            raise PublishError(f"{api.endpoint} refused to let this token write {repo_id} ({_status(exc)}): it needs "
                               "write access to that namespace; nothing was published") from None
        raise PublishError(f"the upload to {url} failed ({_status(exc)}); nothing was published. Run the same "
                           "command again to resume") from None
    except Exception as exc:
        if not _is_network_error(exc):
            raise
        raise PublishError(f"the upload to {url} was interrupted ({type(exc).__name__}); nothing was published. "
                           "Run the same command again to resume: files already sent are not sent again") from None
    return PublishResult(repo_id, url, branch, after, after != before, files)


def check_replaceable(api, repo_id: str, branch: str, marker: str) -> None:
    """Refuse to replace a branch that exists without `marker`, a file only hubprune writes there."""
    from huggingface_hub import errors as hub_errors

    try:
        api.model_info(repo_id, revision=branch)
    except (hub_errors.RevisionNotFoundError, hub_errors.RepositoryNotFoundError):
        return  # a new branch (or repo): nothing to lose
    if not api.file_exists(repo_id, marker, revision=branch):
        raise PublishError(f"branch {branch} of {repo_id} holds files hubprune did not write there (no {marker}); "
                           "it is never replaced: delete or rename that branch first")


def _is_network_error(exc: BaseException) -> bool:
    """Connection refused, reset or timed out, from the stdlib or huggingface_hub's HTTP client (httpx)."""
    return isinstance(exc, (ConnectionError, TimeoutError)) or type(exc).__module__.split(".")[0].startswith("httpx")
