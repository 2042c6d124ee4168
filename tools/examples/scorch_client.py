#!/usr/bin/env python3
"""Example: talk to `scorch serve` from a plug-in or a script (Python standard library only;
copy this file). docs/server.md describes the API; /openapi.json on the server is its schema.

    scorch serve --port 7860 &
    python3 scorch_client.py --url http://127.0.0.1:7860 --out boots.png --set cond=9 --set batch=4
    python3 scorch_client.py --job --out boots.png --set cond=9        # progress from server-sent events
    python3 scorch_client.py --job --cancel-after 2 --set sampler.steps=100000

Exit status: 0 on success, 2 when the server refused the request (its one-line message is
printed, as the CLI prints it), 1 when the server could not be reached or the job failed.
"""
import argparse
import base64
import json
import sys
import time
import urllib.error
import urllib.request


class ScorchError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class Client:
    def __init__(self, url="http://127.0.0.1:7860", timeout=600):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            try:
                message = json.load(e)["error"]
            except (ValueError, KeyError):
                message = f"HTTP {e.code}"
            raise ScorchError(e.code, message) from None

    def health(self):
        return self._call("GET", "/health")

    def samplers(self):
        return self._call("GET", "/v1/samplers")

    def generate(self, config=None, sets=(), fmt="png", retries=5):
        """Blocks until the samples are ready; retries while the server's queue is full (503)."""
        body = {"config": config or {}, "set": list(sets), "format": fmt}
        for attempt in range(retries + 1):
            try:
                return self._call("POST", "/v1/generate", body)
            except ScorchError as e:
                if e.status != 503 or attempt == retries:
                    raise
                time.sleep(1.0)

    def submit(self, config=None, sets=(), fmt="png"):
        return self._call("POST", "/v1/jobs", {"config": config or {}, "set": list(sets), "format": fmt})["id"]

    def job(self, job_id):
        return self._call("GET", f"/v1/jobs/{job_id}")

    def cancel(self, job_id):
        return self._call("DELETE", f"/v1/jobs/{job_id}")

    def preview_png(self, job_id):
        """The latest x0 prediction as PNG bytes, or None before the first step."""
        try:
            with urllib.request.urlopen(f"{self.url}/v1/jobs/{job_id}/preview", timeout=self.timeout) as r:
                return r.read()
        except urllib.error.HTTPError:
            return None

    def events(self, job_id):
        """Yields (event, data) from the job's server-sent events until the final one."""
        with urllib.request.urlopen(f"{self.url}/v1/jobs/{job_id}/events", timeout=self.timeout) as r:
            event, data = None, None
            for raw in r:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                elif line == "" and event is not None:
                    yield event, data
                    if event != "progress":
                        return
                    event, data = None, None


def save(reply, out):
    key = "npy" if out.endswith(".npy") else "png"
    with open(out, "wb") as f:
        f.write(base64.b64decode(reply[key]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:7860")
    ap.add_argument("--set", action="append", default=[], help="a config override, as scorch generate --set")
    ap.add_argument("--out", help="where to write the samples (.png grid or .npy)")
    ap.add_argument("--job", action="store_true", help="submit a job and follow its progress")
    ap.add_argument("--cancel-after", type=float, help="with --job: cancel it after this many seconds")
    a = ap.parse_args()
    client = Client(a.url)
    fmt = "npy" if a.out and a.out.endswith(".npy") else "png"
    try:
        if not a.job:
            reply = client.generate(sets=a.set, fmt=fmt)
        else:
            job_id = client.submit(sets=a.set, fmt=fmt)
            start, cancelled = time.time(), False
            for event, data in client.events(job_id):
                print(f"\r{event}: step {data['step']}/{data['total']}", end="", file=sys.stderr, flush=True)
                late = a.cancel_after is not None and time.time() - start > a.cancel_after
                if late and event == "progress" and not cancelled:
                    client.cancel(job_id)
                    cancelled = True
            print(file=sys.stderr)
            job = client.job(job_id)
            if job["state"] != "done":
                print(f"job {job_id}: {job['state']} {job.get('error', '')}".rstrip(), file=sys.stderr)
                return 1
            reply = job["result"]
        print(reply["summary"], file=sys.stderr)
        if a.out:
            save(reply, a.out)
        return 0
    except ScorchError as e:
        print(f"scorch: error: {e}", file=sys.stderr)
        return 2 if e.status < 500 else 1
    except OSError as e:
        print(f"scorch client: cannot reach {a.url}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
