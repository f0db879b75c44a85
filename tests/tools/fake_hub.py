#!/usr/bin/env python3
"""A stand-in for the Hugging Face hub's file endpoint, for testing scripts/get-model offline.

    fake_hub.py ROOT PORT_FILE [--alias OLD=NEW ...]

Serves ROOT/<repo>/<revision>/<file> at /<repo>/resolve/<revision>/<file> on 127.0.0.1 (a free
port, written to PORT_FILE once listening) and answers the way the hub does:

  * small files ("git" files): 200 with ETag "<git blob sha1>" (sha1 of b"blob <size>\\0" +
    content), Content-Length and X-Repo-Commit;
  * *.safetensors ("LFS" files): 302 to an absolute URL on a "CDN" path (/cdn/...) with
    X-Linked-Etag "<sha256 of the content>", X-Linked-Size and X-Repo-Commit; the CDN sends
    its own, unrelated ETag, so a client must take the checksum from the hub's response, and
    it refuses HEAD requests with 403 (as URLs signed for GET do);
  * a renamed repository (--alias gpt2=openai-community/gpt2): 307 to a relative URL;
  * an unknown repository: 401 with X-Error-Code: RepoNotFound (the hub does not tell a missing
    repository from a private one); unknown revision: 404 RevisionNotFound; unknown file:
    404 EntryNotFound;
  * byte ranges (Range: bytes=N-): 206 with Content-Range, 416 past the end.

Faults are read from ROOT/.faults.json on every request, so one server serves a whole test:
  {"drop_once": ["<repo>/<rev>/<file>", ...]}   the first GET of the file sends the full
      Content-Length but only half of the bytes, then closes the connection (once for each
      change of the file);
  {"corrupt": ["<repo>/<rev>/<file>", ...]}     the file is served with one byte flipped
      (its ETag stays the true checksum).
Every request is appended to ROOT/.requests.log as "METHOD PATH RANGE" (RANGE "-" if none).
"""
import hashlib
import http.server
import json
import os
import socket
import sys
import threading
import urllib.parse

ROOT = ""
ALIASES = {}
DROPPED = set()
LOCK = threading.Lock()


LAST_FAULTS = [""]


def faults():
    """The current fault list; a changed file re-arms drop_once."""
    try:
        with open(os.path.join(ROOT, ".faults.json")) as f:
            text = f.read()
    except FileNotFoundError:
        text = "{}"
    with LOCK:
        if text != LAST_FAULTS[0]:
            LAST_FAULTS[0] = text
            DROPPED.clear()
    return json.loads(text)


def commit_of(repo, rev):
    return hashlib.sha1(f"{repo}@{rev}".encode()).hexdigest()


class Hub(http.server.BaseHTTPRequestHandler):
    server_version = "fake-hub/1"

    def log_message(self, fmt, *args):  # quiet; requests go to .requests.log instead
        pass

    def record(self):
        with LOCK, open(os.path.join(ROOT, ".requests.log"), "a") as f:
            f.write(f"{self.command} {self.path} {self.headers.get('Range', '-')}\n")

    def reply(self, code, headers=(), body=b""):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def error(self, code, err, msg):
        self.reply(code, [("X-Error-Code", err), ("X-Error-Message", msg),
                          ("Content-Type", "application/json")],
                   json.dumps({"error": msg}).encode())

    def do_HEAD(self):
        self.handle_any()

    def do_GET(self):
        self.handle_any()

    def handle_any(self):
        self.record()
        path = urllib.parse.urlsplit(self.path).path
        if path.startswith("/cdn/"):
            return self.serve_cdn(urllib.parse.unquote(path[len("/cdn/"):]))
        if "/resolve/" not in path:
            return self.error(404, "EntryNotFound", "not a resolve URL")
        repo, rest = path.lstrip("/").split("/resolve/", 1)
        rev_enc, _, name = rest.partition("/")
        rev, name = urllib.parse.unquote(rev_enc), urllib.parse.unquote(name)
        if repo in ALIASES:
            return self.reply(307, [("Location", f"/{ALIASES[repo]}/resolve/{rev_enc}/{name}")])
        if not repo or ".." in repo.split("/") or not os.path.isdir(os.path.join(ROOT, repo)):
            return self.error(401, "RepoNotFound", "Repository not found")
        revdir = os.path.join(ROOT, repo, rev)
        if ".." in rev.split("/") or not os.path.isdir(revdir):
            return self.error(404, "RevisionNotFound", "Invalid rev id: " + rev)
        fpath = os.path.join(revdir, name)
        if not name or ".." in name.split("/") or not os.path.isfile(fpath):
            return self.error(404, "EntryNotFound", "Entry not found")
        data = open(fpath, "rb").read()
        common = [("X-Repo-Commit", commit_of(repo, rev))]
        if name.endswith(".safetensors"):  # LFS: redirect to the CDN with the sha256
            host, port = self.server.server_address[:2]
            cdn = f"http://{host}:{port}/cdn/{urllib.parse.quote(f'{repo}/{rev}/{name}')}"
            return self.reply(302, common + [
                ("Location", cdn),
                ("X-Linked-Etag", '"%s"' % hashlib.sha256(data).hexdigest()),
                ("X-Linked-Size", str(len(data)))])
        oid = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        self.send_bytes(f"{repo}/{rev}/{name}", data, common + [("ETag", f'"{oid}"')])

    def serve_cdn(self, key):
        parts = key.split("/")
        if ".." in parts or not os.path.isfile(os.path.join(ROOT, key)):
            return self.reply(404)
        if self.command == "HEAD":  # like URLs signed for GET only
            return self.reply(403)
        data = open(os.path.join(ROOT, key), "rb").read()
        cdn_etag = '"cdn-%s"' % hashlib.md5(data).hexdigest()
        self.send_bytes(key, data, [("ETag", cdn_etag)])

    def send_bytes(self, key, data, headers):
        f = faults()
        if key in f.get("corrupt", []) and data:
            i = len(data) // 2
            data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
        start, size = 0, len(data)
        rng = self.headers.get("Range")
        code = 200
        if rng:
            spec = rng.strip()
            if not (spec.startswith("bytes=") and spec.endswith("-")
                    and spec[6:-1].isdigit()):
                return self.reply(400)
            start = int(spec[6:-1])
            if start >= size:
                return self.reply(416, [("Content-Range", f"bytes */{size}")])
            code = 206
        body = data[start:]
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        if code == 206:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        drop = False
        with LOCK:
            if key in f.get("drop_once", []) and key not in DROPPED:
                DROPPED.add(key)
                drop = True
        if drop:  # half the body, then the connection goes away
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.wfile.write(body)


def main():
    global ROOT
    args = sys.argv[1:]
    if len(args) < 2:
        sys.exit(__doc__)
    ROOT, port_file = os.path.abspath(args[0]), args[1]
    rest = args[2:]
    while rest:
        if rest[0] == "--alias" and len(rest) > 1 and "=" in rest[1]:
            old, new = rest[1].split("=", 1)
            ALIASES[old] = new
            rest = rest[2:]
        else:
            sys.exit(f"fake_hub.py: bad argument {rest[0]!r}")
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    tmp = port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(srv.server_address[1]))
    os.replace(tmp, port_file)
    srv.serve_forever()


if __name__ == "__main__":
    main()
