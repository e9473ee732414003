"""The smallest Hub-compatible server that serves what huggingface_hub asks of it when hubprune publishes
and a user downloads: repos, branches, commits, regular files and LFS objects, model cards.

It exists because the Hub cannot be reached from the machines hubprune is tested on, and no package
provides a local Hub that accepts uploads. hubprune's code path is the real one: the same
huggingface_hub calls, only `endpoint` points here. Clients must set `HF_HUB_DISABLE_XET=1` (before
huggingface_hub is imported): Xet uploads go to a storage service this server does not emulate. Never
set it for the real Hub.

Storage (one folder): `blobs/<sha256>` holds every file's content, addressed by its hash;
`state.json` holds users, repos, branches and commits and is replaced atomically at each commit, so a
server killed mid-upload leaves every repo as its last commit left it.

Safe to run on a shared machine: it binds to loopback only; LFS oids must be sha256 hex and repo paths
relative without '..', so no request reads or writes outside its folder; every write needs a token with
write access to the repo (LFS uploads go to a URL the server signed for an authenticated batch call, as
the Hub's presigned storage URLs); header values are stripped of control characters; bodies are capped.

    python -m hubprune.testing.hub_server --root /tmp/hub --user alice:hf_alice --port 8765
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".arrow", ".parquet", ".msgpack", ".h5", ".zip")
LFS_MIN_BYTES = 10 * 2**20  # larger files go to LFS whatever their name, as on the Hub
MAX_JSON_BYTES = 64 * 2**20  # a commit's NDJSON (regular files inlined as base64) or any other API body
MAX_LFS_BYTES = 64 * 2**30  # one LFS object
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_OID = re.compile(r"[0-9a-f]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_oid(oid) -> str:
    """An LFS object id is a sha256 in hex, nothing else: it names a file in the blob folder."""
    if not isinstance(oid, str) or not _OID.fullmatch(oid):
        raise HubError(400, "an LFS oid must be 64 lowercase hex digits (its sha256)")
    return oid


def check_repo_path(path) -> str:
    """A file's path inside a repo: relative, '/'-separated, no '.' or '..' parts, no control characters."""
    if (not isinstance(path, str) or not path or path.startswith("/") or "\\" in path or _CONTROL.search(path)
            or any(part in ("", ".", "..") for part in path.split("/"))):
        raise HubError(400, f"invalid path in repo: {path!r}")
    return path


def check_name(value: str, what: str) -> str:
    """Branch names, revisions, repo names: printable and free of the characters that split a URL or a header."""
    if not value or _CONTROL.search(value) or ".." in value or len(value) > 256:
        raise HubError(400, f"invalid {what}: {value!r}")
    return value


def git_blob_sha1(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class HubState:
    """Users, repos and commits in `root/state.json`; contents in `root/blobs`. Thread-safe."""

    def __init__(self, root: Path, users: dict[str, str]):
        self.root = Path(root)
        self.blobs = self.root / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        file = self.root / "state.json"
        self.data = json.loads(file.read_text()) if file.is_file() else {"tokens": {}, "repos": {}}
        self.data["tokens"].update({token: user for user, token in users.items()})
        self.save()

    def save(self) -> None:
        with self.lock:
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".state-")
            with os.fdopen(fd, "w") as f:
                json.dump(self.data, f)
            os.replace(tmp, self.root / "state.json")

    # --- access --------------------------------------------------------------------------------------
    def user(self, token: str | None) -> str | None:
        return self.data["tokens"].get(token) if token else None

    def repo(self, repo_id: str, user: str | None, *, write: bool = False) -> dict:
        repo = self.data["repos"].get(repo_id)
        if repo is None or (repo["private"] and user != repo["owner"]):
            raise HubError(404 if user or not write else 401, f"Repository Not Found for url: {repo_id}",
                           "RepoNotFound")
        if write and user != repo["owner"]:
            raise HubError(403, f"You don't have the rights to write to {repo_id}")
        return repo

    def commit_id(self, repo: dict, revision: str) -> str:
        revision = check_name(unquote(revision), "revision")
        if revision in repo["branches"]:
            return repo["branches"][revision]
        if revision in repo["commits"]:
            return revision
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    # --- writes --------------------------------------------------------------------------------------
    def create_repo(self, user: str, namespace: str, name: str, private: bool, base: str) -> tuple[int, dict]:
        repo_id = f"{check_name(namespace, 'namespace')}/{check_name(name, 'repo name')}"
        if "/" in name or "/" in namespace:
            raise HubError(400, f"invalid repo id: {repo_id!r}")
        url = {"url": f"{base}/{repo_id}", "name": repo_id}
        with self.lock:
            if repo_id in self.data["repos"]:
                return 409, {"error": "You already created this model repo", **url}
            if namespace != user:
                raise HubError(403, f"You don't have the rights to create a model under the namespace {namespace}")
            repo = {"owner": user, "private": private, "branches": {}, "commits": {}}
            self.data["repos"][repo_id] = repo
            self._commit(repo, "main", None, {}, "initial commit", "", user)
            self.save()
        return 200, url

    def _commit(self, repo: dict, branch: str, parent: str | None, files: dict, title: str, message: str,
                user: str) -> str:
        date = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        payload = json.dumps([parent, files, title, message, date, len(repo["commits"])], sort_keys=True)
        commit_id = hashlib.sha1(payload.encode()).hexdigest()
        repo["commits"][commit_id] = {"parent": parent, "files": files, "title": title, "message": message,
                                      "date": date, "author": user}
        repo["branches"][branch] = commit_id
        return commit_id

    def commit(self, repo_id: str, user: str, revision: str, lines: list[dict]) -> str:
        with self.lock:
            repo = self.repo(repo_id, user, write=True)
            branch = check_name(unquote(revision), "branch")
            if branch not in repo["branches"]:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            parent = repo["branches"][branch]
            files = dict(repo["commits"][parent]["files"])
            header = {}
            for line in lines:
                key, value = line["key"], line["value"]
                if key == "header":
                    header = value
                elif key == "file":
                    content = base64.b64decode(value["content"])
                    files[check_repo_path(value["path"])] = self._store(content)
                elif key == "lfsFile":
                    blob = self.blobs / check_oid(value["oid"])
                    if not blob.is_file():
                        raise HubError(422, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                    files[check_repo_path(value["path"])] = {"sha256": value["oid"], "size": blob.stat().st_size, "lfs": True,
                                            "git_sha1": None}
                elif key == "deletedFile":
                    files.pop(value["path"], None)
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {p: f for p, f in files.items() if not p.startswith(prefix)}
                else:
                    raise HubError(400, f"unsupported commit operation {key!r}")
            if header.get("parentCommit") and header["parentCommit"] != parent:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            commit_id = self._commit(repo, branch, parent, files, header.get("summary", ""),
                                     header.get("description", ""), user)
            self.save()  # the only place a repo changes: all of a commit or nothing
        return commit_id

    def _store(self, content: bytes) -> dict:
        sha256 = hashlib.sha256(content).hexdigest()
        self._write_blob(sha256, content)
        return {"sha256": sha256, "size": len(content), "lfs": False, "git_sha1": git_blob_sha1(content)}

    def _write_blob(self, sha256: str, content: bytes) -> None:
        target = self.blobs / sha256
        if not target.is_file():
            fd, tmp = tempfile.mkstemp(dir=self.blobs, prefix=".upload-")
            with os.fdopen(fd, "wb") as f:
                f.write(content)
            os.replace(tmp, target)

    def put_lfs(self, oid: str, content: bytes) -> None:
        check_oid(oid)
        if hashlib.sha256(content).hexdigest() != oid:
            raise HubError(400, "uploaded content does not match its oid")
        self._write_blob(oid, content)

    def create_branch(self, repo_id: str, user: str, branch: str, start: str | None) -> int:
        check_name(branch, "branch")
        with self.lock:
            repo = self.repo(repo_id, user, write=True)
            if branch in repo["branches"]:
                return 409
            repo["branches"][branch] = self.commit_id(repo, start or "main")
            self.save()
        return 200


def _card_data(state: HubState, files: dict) -> dict | None:
    """The README's YAML metadata, as the Hub reports it in `cardData`."""
    from huggingface_hub import metadata_load

    readme = files.get("README.md")
    return None if readme is None else metadata_load(state.blobs / readme["sha256"])


def _file_oid(entry: dict) -> str:
    return entry["sha256"] if entry["lfs"] else entry["git_sha1"]


class _Handler(BaseHTTPRequestHandler):
    server_version = "hubprune-local-hub/1"
    protocol_version = "HTTP/1.1"

    @property
    def state(self) -> HubState:
        return self.server.state  # type: ignore[attr-defined]

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _token(self) -> str | None:
        header = self.headers.get("authorization", "")
        return header[7:] if header.lower().startswith("bearer ") else None

    def _user(self) -> str:
        """The token's user; every write route needs one."""
        user = self.state.user(self._token())
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return user

    def _body(self, limit: int = MAX_JSON_BYTES) -> bytes:
        try:
            length = int(self.headers.get("content-length") or 0)
        except ValueError:
            raise HubError(400, "invalid Content-Length") from None
        if length < 0 or length > limit:
            self.close_connection = True  # the unread body must not be taken for the next request
            raise HubError(413, f"request body over {limit} bytes")
        return self.rfile.read(length) if length else b""

    def _json(self, default=None):
        body = self._body()
        if not body and default is not None:
            return default
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise HubError(400, "the request body is not valid JSON") from None

    def _send(self, status: int, body: bytes | dict | list | None = None, headers: dict | None = None,
              head: bool = False) -> None:
        if isinstance(body, (dict, list)):
            body, headers = json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})}
        body = body or b""
        self.send_response(status)
        for key, value in (headers or {}).items():  # no value may end the header or start another
            self.send_header(key, _CONTROL.sub(" ", str(value)).encode("latin-1", "replace").decode("latin-1"))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path
        hook = self.server.hook  # type: ignore[attr-defined]
        if hook is not None and hook(method, path) == "drop":  # a crash, as the client sees one
            self.close_connection = True
            return
        try:
            for pattern, handler in ROUTES[method]:
                match = re.fullmatch(pattern, path)
                if match:
                    return handler(self, *match.groups())
            raise HubError(404, f"no route for {method} {path}")
        except HubError as exc:
            error = exc
        except (KeyError, TypeError, AttributeError, ValueError):  # a body without the fields a route reads
            error = HubError(400, "malformed request")
        headers = {"X-Error-Message": error.message}
        if error.code:
            headers["X-Error-Code"] = error.code
        self._send(error.status, {"error": error.message}, headers, head=method == "HEAD")

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    # --- routes --------------------------------------------------------------------------------------
    def whoami(self):
        user = self.state.user(self._token())
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        self._send(200, {"type": "user", "name": user, "orgs": [],
                         "auth": {"type": "access_token", "accessToken": {"displayName": "local", "role": "write"}}})

    def create(self):
        user = self._user()
        body = self._json(default={})
        if body.get("type", "model") != "model":
            raise HubError(400, "this local hub holds model repos only")
        private = body.get("visibility", "private" if body.get("private") else "public") == "private"
        status, payload = self.state.create_repo(user, str(body.get("organization") or user), str(body["name"]),
                                                 private, self.base)
        self._send(status, payload)

    def info(self, repo_id: str, revision: str | None = None):
        repo = self.state.repo(repo_id, self.state.user(self._token()))
        sha = self.state.commit_id(repo, revision or "main")
        commit = repo["commits"][sha]
        siblings = [{"rfilename": p, "size": f["size"], "blobId": _file_oid(f),
                     **({"lfs": {"sha256": f["sha256"], "size": f["size"], "pointerSize": 134}} if f["lfs"] else {})}
                    for p, f in sorted(commit["files"].items())]
        card = _card_data(self.state, commit["files"])
        self._send(200, {"id": repo_id, "modelId": repo_id, "author": repo["owner"], "sha": sha,
                         "private": repo["private"], "lastModified": commit["date"], "siblings": siblings,
                         "cardData": card, "tags": (card or {}).get("tags", []),
                         "library_name": (card or {}).get("library_name")})

    def tree(self, repo_id: str, revision: str, prefix: str | None = None):
        repo = self.state.repo(repo_id, self.state.user(self._token()))
        files = repo["commits"][self.state.commit_id(repo, revision)]["files"]
        prefix = (unquote(prefix).strip("/") + "/") if prefix else ""
        entries = [{"type": "file", "path": p, "size": f["size"], "oid": _file_oid(f),
                    **({"lfs": {"oid": f["sha256"], "size": f["size"], "pointerSize": 134}} if f["lfs"] else {})}
                   for p, f in sorted(files.items()) if p.startswith(prefix)]
        self._send(200, entries)

    def commits(self, repo_id: str, revision: str):
        repo = self.state.repo(repo_id, self.state.user(self._token()))
        sha, history = self.state.commit_id(repo, revision), []
        while sha:
            c = repo["commits"][sha]
            history.append({"id": sha, "title": c["title"], "message": c["message"], "date": c["date"],
                            "authors": [{"user": c["author"]}]})
            sha = c["parent"]
        self._send(200, history)

    def preupload(self, repo_id: str, revision: str):
        repo = self.state.repo(repo_id, self._user(), write=True)
        body = self._json()
        branch = check_name(unquote(revision), "branch")
        files = repo["commits"][repo["branches"][branch]]["files"] if branch in repo["branches"] else {}
        answer = []
        for item in body["files"]:
            lfs = item["path"].endswith(LFS_SUFFIXES) or item["size"] >= LFS_MIN_BYTES
            remote = files.get(item["path"])
            oid = None if remote is None else (remote["sha256"] if lfs else remote["git_sha1"])
            answer.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                           "oid": oid})
        self._send(200, {"files": answer, "commitOid": repo["branches"].get(branch)})

    def commit(self, repo_id: str, revision: str):
        user = self._user()
        self.state.repo(repo_id, user, write=True)
        try:
            lines = [json.loads(line) for line in self._body().decode().splitlines() if line.strip()]
        except (ValueError, UnicodeDecodeError):
            raise HubError(400, "the commit body is not valid NDJSON") from None
        sha = self.state.commit(repo_id, user, revision, lines)
        self._send(200, {"commitUrl": f"{self.base}/{repo_id}/commit/{sha}", "commitOid": sha,
                         "pullRequestUrl": None})

    def branch(self, repo_id: str, branch: str):
        body = self._json(default={})
        status = self.state.create_branch(repo_id, self._user(), unquote(branch), body.get("startingPoint"))
        self._send(status, {} if status == 200 else {"error": "Reference already exists"})

    def lfs_batch(self, repo_id: str):
        self.state.repo(repo_id, self._user(), write=True)
        body = self._json()
        objects = []
        for obj in body["objects"]:
            entry = {"oid": check_oid(obj["oid"]), "size": obj["size"]}
            if not (self.state.blobs / obj["oid"]).is_file():  # already stored: no action, nothing to send
                # The client PUTs to this URL without its token (as to the Hub's presigned storage URLs),
                # so the URL itself carries the authorisation: a signature only this server can make.
                upload = f"{self.base}/lfs-upload/{obj['oid']}?signature={self.server.sign(obj['oid'])}"  # type: ignore[attr-defined]
                entry["actions"] = {"upload": {"href": upload, "header": {}},
                                    "verify": {"href": f"{self.base}/lfs-verify/{repo_id}", "header": {}}}
            objects.append(entry)
        self._send(200, {"transfer": "basic", "objects": objects})

    def lfs_put(self, oid: str):
        signature = parse_qs(urlsplit(self.path).query).get("signature", [""])[0]
        if not hmac.compare_digest(signature, self.server.sign(oid)):  # type: ignore[attr-defined]
            raise HubError(403, "upload URL not signed by this server: ask the LFS batch endpoint for one")
        self.state.put_lfs(oid, self._body(MAX_LFS_BYTES))
        self._send(200)

    def lfs_verify(self, repo_id: str):
        self.state.repo(repo_id, self._user(), write=True)
        body = self._json()
        blob = self.state.blobs / check_oid(body["oid"])
        if not blob.is_file() or blob.stat().st_size != body["size"]:
            raise HubError(404, f"object {body['oid']} not found")
        self._send(200, {})

    def resolve(self, repo_id: str, revision: str, path: str, head: bool = False):
        repo = self.state.repo(repo_id, self.state.user(self._token()))
        sha = self.state.commit_id(repo, revision)
        entry = repo["commits"][sha]["files"].get(check_repo_path(unquote(path)))
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        headers = {"X-Repo-Commit": sha, "ETag": f'"{_file_oid(entry)}"'}
        if entry["lfs"]:
            headers.update({"X-Linked-Etag": f'"{entry["sha256"]}"', "X-Linked-Size": entry["size"]})
        content = (self.state.blobs / entry["sha256"]).read_bytes()
        self._send(200, content, headers, head=head)

    def validate_yaml(self):
        from huggingface_hub.repocard import REGEX_YAML_BLOCK  # what the client splits a card with

        body = self._json()
        match = REGEX_YAML_BLOCK.search(body.get("content", ""))
        try:
            data = yaml.safe_load(match.group(2)) if match else {}
        except yaml.YAMLError as exc:
            raise HubError(400, f"Invalid YAML in the metadata: {exc}") from None
        if not isinstance(data, dict):
            raise HubError(400, "The metadata must be a YAML mapping")
        self._send(200, {"errors": [], "warnings": []})


_REPO = r"/api/models/([^/]+/[^/]+)"
ROUTES = {
    "GET": [
        (r"/api/whoami-v2", _Handler.whoami),
        (r"/api/agent-harnesses", lambda h: h._send(200, [])),
        (_REPO + r"/revision/([^/]+)", _Handler.info),
        (_REPO + r"/tree/([^/]+)(?:/(.*))?", _Handler.tree),
        (_REPO + r"/commits/([^/]+)", _Handler.commits),
        (_REPO, _Handler.info),
        (r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", _Handler.resolve),
    ],
    "HEAD": [(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", lambda h, *a: _Handler.resolve(h, *a, head=True))],
    "POST": [
        (r"/api/repos/create", _Handler.create),
        (r"/api/validate-yaml", _Handler.validate_yaml),
        (_REPO + r"/preupload/([^/]+)", _Handler.preupload),
        (_REPO + r"/commit/([^/]+)", _Handler.commit),
        (_REPO + r"/branch/([^/]+)", _Handler.branch),
        (r"/([^/]+/[^/]+)\.git/info/lfs/objects/batch", _Handler.lfs_batch),
        (r"/lfs-verify/([^/]+/[^/]+)", _Handler.lfs_verify),
    ],
    "PUT": [(r"/lfs-upload/([0-9a-f]{64})", _Handler.lfs_put)],
}


class LocalHub:
    """A running local Hub: `with LocalHub(root, {"alice": "hf_alice"}) as hub: ... hub.url ...`"""

    def __init__(self, root: str | Path, users: dict[str, str], host: str = "127.0.0.1", port: int = 0,
                 hook=None):
        """`hook(method, path)` sees every request first; returning "drop" closes the connection without
        an answer (fault injection for tests: the server dying at that request)."""
        if host not in LOOPBACK_HOSTS:  # it serves a test's tokens and files: never to another machine
            raise ValueError(f"the local hub binds to loopback only ({', '.join(LOOPBACK_HOSTS)}), not {host!r}")
        self.state = HubState(Path(root), users)
        self.httpd = ThreadingHTTPServer((host, port), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.state = self.state  # type: ignore[attr-defined]
        self.httpd.hook = hook  # type: ignore[attr-defined]
        secret = os.urandom(32)
        self.httpd.sign = lambda oid: hmac.new(secret, oid.encode(), hashlib.sha256).hexdigest()  # type: ignore[attr-defined]
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LocalHub:
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="folder for blobs and state.json")
    parser.add_argument("--user", action="append", default=[], metavar="NAME:TOKEN", help="a user and its token")
    parser.add_argument("--host", default="127.0.0.1", choices=LOOPBACK_HOSTS)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)
    users = dict(u.split(":", 1) for u in args.user)
    hub = LocalHub(args.root, users, args.host, args.port)
    print(f"local hub on {hub.url} (users: {', '.join(users) or 'none'})", flush=True)
    try:
        hub.httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
