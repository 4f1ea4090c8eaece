"""A local stand-in for the Slack Web API (stdlib only), for the lab and tests.

Implements POST /api/chat.postMessage, /api/chat.update, /api/auth.test and /api/api.test with
form or JSON bodies. A Bearer token (or a `token` form field) is required and checked against
lab.json. Every call to a known method is appended (without the token) to
<lab>/slack/messages.jsonl. `GET /_recorded` returns {"ok": true, "calls": [...]} (optionally
`?method=chat.postMessage`), `POST /_reset` clears the record.

Run: python -m lab.slack_standin --lab-dir <dir> --port <port>
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

TEAM = {"team": "mailshift-lab", "team_id": "T0MSLAB01", "user": "mailshift-bot",
        "user_id": "U0MSBOT01", "bot_id": "B0MSBOT01"}


class Recorder:
    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        self._seq = itertools.count(1)
        self._last_ts = 0.0

    def next_ts(self) -> str:
        with self.lock:
            t = max(time.time(), self._last_ts + 0.000001)
            self._last_ts = t
            return f"{t:.6f}"

    def append(self, rec: dict) -> None:
        line = json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n"
        with self.lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line)

    def read(self) -> list[dict]:
        with self.lock:
            text = self.path.read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def reset(self) -> None:
        with self.lock:
            self.path.write_text("")


def make_handler(token: str, recorder: Recorder):
    class Handler(BaseHTTPRequestHandler):
        server_version = "mailshift-slack-standin/1"

        def log_message(self, fmt, *args):  # to our stdout log, one line per request
            sys.stdout.write(f"{self.log_date_time_string()} {fmt % args}\n")
            sys.stdout.flush()

        def _send(self, obj, status: int = 200) -> None:
            body = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _params(self) -> dict:
            url = urlsplit(self.path)
            params = dict(parse_qsl(url.query, keep_blank_values=True))
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if raw:
                if ctype == "application/json":
                    body = json.loads(raw.decode("utf-8"))
                    if not isinstance(body, dict):
                        raise ValueError("JSON body must be an object")
                    params.update(body)
                else:
                    params.update(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
            for k in ("blocks", "attachments", "metadata"):  # form posts carry JSON strings
                if isinstance(params.get(k), str):
                    try:
                        params[k] = json.loads(params[k])
                    except ValueError:
                        pass
            return params

        def do_GET(self):
            url = urlsplit(self.path)
            if url.path == "/_recorded":
                q = dict(parse_qsl(url.query))
                calls = recorder.read()
                if "method" in q:
                    calls = [c for c in calls if c["method"] == q["method"]]
                return self._send({"ok": True, "calls": calls})
            if url.path == "/_health":
                return self._send({"ok": True})
            if url.path.startswith("/api/"):
                return self._api(url.path[len("/api/"):])
            return self._send({"ok": False, "error": "not_found"}, 404)

        def do_POST(self):
            url = urlsplit(self.path)
            if url.path == "/_reset":
                recorder.reset()
                return self._send({"ok": True})
            if url.path.startswith("/api/"):
                return self._api(url.path[len("/api/"):])
            return self._send({"ok": False, "error": "not_found"}, 404)

        def _api(self, method: str):
            try:
                params = self._params()
            except ValueError:
                return self._send({"ok": False, "error": "invalid_json"})
            auth = self.headers.get("Authorization") or ""
            given = auth[7:].strip() if auth.lower().startswith("bearer ") else None
            given = given or params.pop("token", None)
            params.pop("token", None)
            if method not in METHODS:
                return self._send({"ok": False, "error": "unknown_method"}, 404)
            if not given:
                return self._send({"ok": False, "error": "not_authed"})
            if given != token:
                return self._send({"ok": False, "error": "invalid_auth"})
            ts = recorder.next_ts()
            resp = METHODS[method](params, ts)
            recorder.append({"method": method, "params": params, "ts": ts,
                             "ok": resp.get("ok", False), "received_at": time.time()})
            return self._send(resp)

    return Handler


def _post_message(params: dict, ts: str) -> dict:
    channel = params.get("channel")
    if not channel:
        return {"ok": False, "error": "channel_not_found"}
    if not (params.get("text") or params.get("blocks") or params.get("attachments")):
        return {"ok": False, "error": "no_text"}
    message = {"type": "message", "user": TEAM["user_id"], "bot_id": TEAM["bot_id"],
               "text": params.get("text", ""), "ts": ts}
    for k in ("blocks", "attachments", "thread_ts", "metadata"):
        if k in params:
            message[k] = params[k]
    return {"ok": True, "channel": channel, "ts": ts, "message": message}


def _update(params: dict, ts: str) -> dict:
    if not params.get("channel"):
        return {"ok": False, "error": "channel_not_found"}
    if not params.get("ts"):
        return {"ok": False, "error": "message_not_found"}
    return {"ok": True, "channel": params["channel"], "ts": params["ts"],
            "text": params.get("text", ""),
            "message": {"type": "message", "text": params.get("text", ""),
                        "user": TEAM["user_id"], "bot_id": TEAM["bot_id"]}}


def _auth_test(params: dict, ts: str) -> dict:
    return {"ok": True, "url": "https://mailshift-lab.slack.invalid/", **TEAM}


def _api_test(params: dict, ts: str) -> dict:
    return {"ok": True, "args": params}


METHODS = {"chat.postMessage": _post_message, "chat.update": _update,
           "auth.test": _auth_test, "api.test": _api_test}


# client helpers for tests ----------------------------------------------------------------------
def _root_url(cfg) -> str:
    return cfg.slack_base_url.rstrip("/").rsplit("/api", 1)[0]


def recorded(cfg, method: str | None = None) -> list[dict]:
    url = _root_url(cfg) + "/_recorded" + (f"?method={method}" if method else "")
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)["calls"]


def reset(cfg) -> None:
    req = urllib.request.Request(_root_url(cfg) + "/_reset", data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lab-dir", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    a = ap.parse_args(argv)
    lab = Path(a.lab_dir)
    token = json.loads((lab / "lab.json").read_text())["slack"]["token"]
    recorder = Recorder(lab / "slack" / "messages.jsonl")
    ThreadingHTTPServer.allow_reuse_address = True
    httpd = ThreadingHTTPServer((a.host, a.port), make_handler(token, recorder))
    httpd.daemon_threads = True
    print(f"slack stand-in listening on http://{a.host}:{a.port}/api/", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
