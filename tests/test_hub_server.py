"""The local Hub server is run by `make demo` on a user's machine and by the tests: it must not serve or
write anything outside its storage folder, accept writes without a token, or let a request shape its
response headers. Each test is an attack that worked before the server checked its input."""
from __future__ import annotations

import hashlib
import http.client
import json

import pytest

from hubprune.testing.hub_server import MAX_JSON_BYTES, LocalHub

USERS = {"alice": "hf_alice", "bob": "hf_bob"}


@pytest.fixture()
def hub(tmp_path):
    root = tmp_path / "hub"
    (tmp_path / "secret.txt").write_text("bob's token is hf_bob")
    with LocalHub(root, USERS) as server:
        status, _, _ = request(server, "POST", "/api/repos/create", {"name": "m"}, token="hf_alice")
        assert status == 200
        yield server


def request(hub, method, path, body=None, token=None, raw: bytes | None = None, headers=None):
    host, port = hub.httpd.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    head = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
    conn.request(method, path, body=data, headers=head)
    response = conn.getresponse()
    result = response.status, response.getheaders(), response.read()
    conn.close()
    return result


def commit(hub, operations, token="hf_alice"):
    lines = [{"key": "header", "value": {"summary": "c"}}, *operations]
    return request(hub, "POST", "/api/models/alice/m/commit/main",
                   raw="\n".join(json.dumps(x) for x in lines).encode(), token=token)


@pytest.mark.parametrize("oid", ["../state.json", "../../secret.txt", "/etc/passwd", "A" * 64, "0" * 63])
def test_an_lfs_oid_that_is_not_a_sha256_is_refused_at_commit(hub, oid):
    status, _, body = commit(hub, [{"key": "lfsFile", "value": {"path": "w.safetensors", "oid": oid, "size": 1}}])
    assert status == 400 and b"64 lowercase hex" in body
    status, _, body = request(hub, "GET", "/alice/m/resolve/main/w.safetensors")
    assert status == 404 and b"state" not in body and b"hf_bob" not in body


@pytest.mark.parametrize("path", ["../x", "a/../../x", "/abs", "a//b", "a\nb"])
def test_file_paths_outside_the_repo_are_refused(hub, path):
    import base64

    status, _, _ = commit(hub, [{"key": "file", "value": {"path": path, "content": base64.b64encode(b"x").decode()}}])
    assert status == 400


def test_lfs_upload_needs_the_signed_url_from_an_authenticated_batch_call(hub):
    content = b"weights"
    oid = hashlib.sha256(content).hexdigest()
    assert request(hub, "PUT", f"/lfs-upload/{oid}", raw=content)[0] == 403  # no signature
    assert request(hub, "PUT", f"/lfs-upload/{oid}?signature={'0' * 64}", raw=content)[0] == 403
    batch = {"operation": "upload", "objects": [{"oid": oid, "size": len(content)}]}
    assert request(hub, "POST", "/alice/m.git/info/lfs/objects/batch", batch)[0] == 401  # no token
    assert request(hub, "POST", "/alice/m.git/info/lfs/objects/batch", batch, token="hf_bob")[0] == 403
    status, _, body = request(hub, "POST", "/alice/m.git/info/lfs/objects/batch", batch, token="hf_alice")
    href = json.loads(body)["objects"][0]["actions"]["upload"]["href"]
    path = href.split(hub.url, 1)[1]
    assert request(hub, "PUT", path, raw=content)[0] == 200
    assert request(hub, "PUT", path.replace(oid, "f" * 64), raw=content)[0] == 403  # signed for another oid


def test_lfs_verify_needs_a_token_with_write_access(hub):
    body = {"oid": "0" * 64, "size": 1}
    assert request(hub, "POST", "/lfs-verify/alice/m", body)[0] == 401
    assert request(hub, "POST", "/lfs-verify/alice/m", body, token="hf_bob")[0] == 403
    assert request(hub, "POST", "/lfs-verify/alice/m", {"oid": "../state.json", "size": 1}, token="hf_alice")[0] == 400


def test_a_revision_cannot_inject_response_headers(hub):
    status, headers, _ = request(hub, "GET", "/api/models/alice/m/revision/x%0d%0aSet-Cookie:%20pwned=1")
    assert status == 400
    assert not any(name.lower() == "set-cookie" for name, _ in headers)
    assert all("\r" not in v and "\n" not in v for _, v in headers)


def test_request_bodies_are_capped(hub):
    status, _, _ = request(hub, "POST", "/api/models/alice/m/commit/main", raw=b"x",
                           headers={"Content-Length": str(MAX_JSON_BYTES + 1)}, token="hf_alice")
    assert status == 413


def test_malformed_bodies_are_a_400_not_a_crash(hub):
    assert request(hub, "POST", "/api/repos/create", raw=b"{not json", token="hf_alice")[0] == 400
    assert request(hub, "POST", "/api/models/alice/m/preupload/main", {"nofiles": 1}, token="hf_alice")[0] == 400


def test_the_server_binds_to_loopback_only(tmp_path):
    with pytest.raises(ValueError, match="loopback"):
        LocalHub(tmp_path, USERS, host="0.0.0.0")
