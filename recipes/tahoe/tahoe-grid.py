"""A Tahoe-LAFS grid member, the bundle's command (PID 1 of its container).

Alone (no overlay, so no cluster: the TAHOE_GRID_* variables unset) it is a
one-box grid: an introducer and a storage node with its web gateway that
stores every file whole on itself (shares 1 of 1).

In the community overlay the agent decides the bundle's cluster (the
manifest's [cluster]): the first box forms the grid, later boxes follow a
box already in it. TAHOE_GRID_ADDR is this box's overlay address,
TAHOE_GRID_FROM the box it follows as NODE=ADDR (itself on the box that
formed the grid). The box that formed it runs the introducer; every member runs a
storage node and gateway, and serves the grid's introducer fURL (a secret:
whoever has it can join the grid) at http://ADDR:3459/introducer.furl, a
port the manifest publishes on the overlay only. A follower fetches the
fURL from the box it follows, keeps it in the data volume and serves it in
turn. Introducer and storage ports (3457, 3458) are also on the overlay
only, announced at the overlay address. Share counts come from
TAHOE_SHARES_NEEDED/HAPPY/TOTAL.

On first start the node directories are made, each aside and renamed into
place. At every start the settings above are written into tahoe.cfg (a box
that ran alone and then joins the overlay keeps its node and its data).
When a node exits, the others are stopped and the script exits non-zero,
so the supervisor restarts the lot. SIGTERM stops everything.
"""

import http.server
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request

STATE = os.environ.get("TAHOE_STATE", "/var/lib/tahoe")
INTRODUCER = os.path.join(STATE, "introducer")
NODE = os.path.join(STATE, "node")
INTRODUCER_PORT = int(os.environ.get("TAHOE_INTRODUCER_PORT", "3457"))
NODE_PORT = int(os.environ.get("TAHOE_NODE_PORT", "3458"))
WEB_PORT = int(os.environ.get("TAHOE_WEB_PORT", "3456"))
# Space the storage server leaves free on the data partition (Tahoe's
# default, 1G, is half of a small stick).
RESERVED = os.environ.get("TAHOE_RESERVED_SPACE", "200M")
FURL_WAIT_S = 600
GRID_PORT = int(os.environ.get("TAHOE_GRID_PORT", "3459"))
GRID_ADDR = os.environ.get("TAHOE_GRID_ADDR", "")
# NODE=ADDR of the box followed (the manifest's [cluster] member).
GRID_FROM = os.environ.get("TAHOE_GRID_FROM", "").rpartition("=")[2]
# The fURL a follower fetched, kept for its next starts.
GRID_FURL = os.path.join(STATE, "grid.furl")
# A fetched fURL is read within this many bytes and seconds.
FURL_MAX_BYTES = 4096
FETCH_TIMEOUT_S = 10


def log(msg):
    print(f"tahoe-grid: {msg}", flush=True)


def tahoe(*args):
    return [sys.executable, "-m", "allmydata.scripts.runner", *args]


def create(jobs):
    """Make the node directories JOBS ({dir: tahoe arguments}) lacks, all
    at once (each is a Python start of its own, slow on a small box); each
    is made aside and renamed into place, so a crash leaves none half made.
    Returns the directories made."""
    running = []
    for final, args in jobs.items():
        if os.path.exists(os.path.join(final, "tahoe.cfg")):
            continue
        tmp = final + ".new"
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"creating {final}")
        running.append((final, tmp, args[0], subprocess.Popen(tahoe(*args, tmp))))
    for final, tmp, verb, p in running:
        status = p.wait()
        if status != 0:
            sys.exit(f"tahoe-grid: tahoe {verb} {tmp} failed with status {status}")
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
    return [r[0] for r in running]


def write_file(path, text):
    """Replace PATH with TEXT atomically, unless it holds TEXT already."""
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return
    except FileNotFoundError:
        pass
    tmp = path + ".new"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.rename(tmp, path)


def set_option(cfg, section, key, value):
    """Set KEY = VALUE in [SECTION] of tahoe.cfg, keeping the rest as is."""
    with open(cfg, encoding="utf-8") as f:
        lines = f.read().splitlines()
    out, current, done = [], None, False
    for line in lines:
        s = line.strip()
        if s.startswith("[") and s.endswith("]"):
            if current == section and not done:
                out.append(f"{key} = {value}")
                done = True
            current = s[1:-1]
        elif current == section and s.split("=", 1)[0].strip() == key:
            if not done:
                out.append(f"{key} = {value}")
                done = True
            continue
        out.append(line)
    if not done:
        if current != section:
            out.append(f"[{section}]")
        out.append(f"{key} = {value}")
    write_file(cfg, "\n".join(out) + "\n")


def parse_furl(furl):
    """(tubid, locations, swissnum) of pb://TUBID@LOCATIONS/SWISSNUM, or
    None for anything else (a half-written file, a peer's garbage)."""
    furl = furl.strip()
    if not furl.startswith("pb://") or len(furl) > FURL_MAX_BYTES:
        return None
    tub, _, rest = furl.removeprefix("pb://").partition("@")
    locations, _, swiss = rest.rpartition("/")
    safe = lambda x: x and all(c.isalnum() or c in "-_" for c in x)
    if not (safe(tub) and safe(swiss) and locations):
        return None
    if any(c.isspace() for c in locations):
        return None
    return tub, locations, swiss


def read_furl(path):
    """The introducer's fURL from PATH, once it has written all of it."""
    try:
        with open(path, encoding="utf-8") as f:
            furl = f.read().strip()
    except FileNotFoundError:
        return None
    return furl if parse_furl(furl) else None


def furl_at(furl, here):
    """The introducer's fURL at address HERE (this box's overlay address,
    or 127.0.0.1 alone): its file may name the address the box had when
    the introducer was made."""
    tub, _, swiss = parse_furl(furl)
    return f"pb://{tub}@tcp:{here}:{INTRODUCER_PORT}/{swiss}"


def fetch_furl(pair):
    """The grid's fURL from the box this one follows, retried every 10 s
    until it answers with one (or we are stopped); kept in GRID_FURL."""
    url = f"http://{GRID_FROM}:{GRID_PORT}/introducer.furl"
    warned = False
    while not pair.stopping:
        try:
            with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as r:
                furl = r.read(FURL_MAX_BYTES + 1).decode("ascii", "replace").strip()
            if parse_furl(furl):
                write_file(GRID_FURL, furl + "\n")
                log(f"the grid's fURL came from {GRID_FROM}")
                return furl
            why = "an answer that is not a fURL"
        except Exception as e:  # any failure: try again later
            why = str(e)
        if not warned:
            log(f"waiting for the grid's fURL from {url}: {why}")
            warned = True
        pair.reap(block=False)
        for _ in range(20):
            if pair.stopping:
                break
            time.sleep(0.5)
    return None


def serve_furl(furl):
    """Serve FURL at /introducer.furl on GRID_PORT (published on the overlay
    only), in a thread, one short request at a time."""

    class Handler(http.server.BaseHTTPRequestHandler):
        timeout = 5  # a client that sends nothing is dropped

        def do_GET(self):
            if self.path != "/introducer.furl":
                self.send_error(404)
                return
            body = (furl + "\n").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("0.0.0.0", GRID_PORT), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    log(f"serving the grid's fURL on port {GRID_PORT} (overlay only)")


class Pair:
    def __init__(self):
        self.children = {}
        self.stopping = False
        self.status = 0

    def start(self, name, node_dir):
        # A container starts with a fresh pid namespace: a pid file left by
        # a process of the previous run names nobody.
        for stale in ("running.process", "twistd.pid"):
            try:
                os.unlink(os.path.join(node_dir, stale))
            except FileNotFoundError:
                pass
        # `tahoe run` stops when its stdin closes; the container's is
        # /dev/null, so that is no sign here.
        p = subprocess.Popen(tahoe("run", "--allow-stdin-close", node_dir))
        # Kept referenced: subprocess reaps the processes of forgotten Popen
        # objects itself, and their exit would go unseen here.
        self.children[p.pid] = (name, p)
        log(f"{name} started (pid {p.pid})")

    def stop(self, why):
        if not self.stopping:
            log(f"stopping: {why}")
        self.stopping = True
        for pid in self.children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def reap(self, block):
        """Reap exited children (as PID 1, orphans too)."""
        while True:
            try:
                pid, st = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                # No child left at all: whatever is still listed is gone.
                for name, _ in self.children.values():
                    self.status = self.status or 1
                    self.stop(f"{name} is gone")
                self.children.clear()
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is not None:
                name = child[0]
                code = os.waitstatus_to_exitcode(st)
                if not self.stopping:
                    self.status = 1
                    self.stop(f"{name} exited with status {code}")
            if block:
                return


def shares():
    return [
        os.environ.get("TAHOE_SHARES_NEEDED", "1"),
        os.environ.get("TAHOE_SHARES_HAPPY", "1"),
        os.environ.get("TAHOE_SHARES_TOTAL", "1"),
    ]


def main():
    pair = Pair()
    signal.signal(signal.SIGTERM, lambda *_: pair.stop("SIGTERM"))
    signal.signal(signal.SIGINT, lambda *_: pair.stop("SIGINT"))
    os.makedirs(STATE, exist_ok=True)
    os.makedirs(os.environ.get("TMPDIR", os.path.join(STATE, "tmp")), exist_ok=True)

    grid = bool(GRID_ADDR)
    introducer = not grid or GRID_FROM == GRID_ADDR
    here = GRID_ADDR if grid else "127.0.0.1"
    needed, happy, total = shares()
    if grid:
        log(f"grid member at {GRID_ADDR}, " + ("runs the introducer" if introducer else f"follows {GRID_FROM}"))
    jobs = {
        NODE: [
            "create-node",
            f"--nickname={os.environ.get('TAHOE_NICKNAME', 'nuvol')}",
            f"--port=tcp:{NODE_PORT}",
            f"--location=tcp:{here}:{NODE_PORT}",
            f"--webport=tcp:{WEB_PORT}:interface=0.0.0.0",
            f"--shares-needed={needed}",
            f"--shares-happy={happy}",
            f"--shares-total={total}",
        ],
    }
    if introducer:
        jobs[INTRODUCER] = [
            "create-introducer",
            f"--port=tcp:{INTRODUCER_PORT}",
            f"--location=tcp:{here}:{INTRODUCER_PORT}",
        ]
    made = create(jobs)
    if made:
        log(f"made {', '.join(made)}")
    # Settings that follow the box's place (alone, or in the grid at its
    # overlay address), written at every start.
    cfg = os.path.join(NODE, "tahoe.cfg")
    set_option(cfg, "storage", "reserved_space", RESERVED)
    set_option(cfg, "node", "tub.location", f"tcp:{here}:{NODE_PORT}")
    set_option(cfg, "client", "shares.needed", needed)
    set_option(cfg, "client", "shares.happy", happy)
    set_option(cfg, "client", "shares.total", total)
    if introducer:
        set_option(os.path.join(INTRODUCER, "tahoe.cfg"), "node", "tub.location", f"tcp:{here}:{INTRODUCER_PORT}")
    if pair.stopping:
        sys.exit(0)

    furl = None
    if introducer:
        pair.start("introducer", INTRODUCER)
        furl_file = os.path.join(INTRODUCER, "private", "introducer.furl")
        deadline = time.monotonic() + FURL_WAIT_S
        while furl is None:
            furl = read_furl(furl_file)
            if furl is not None:
                break
            pair.reap(block=False)
            if pair.stopping:
                break
            if time.monotonic() > deadline:
                pair.status = 1
                pair.stop(f"the introducer wrote no fURL to {furl_file} in {FURL_WAIT_S} s")
                break
            time.sleep(0.5)
        if furl is not None:
            furl = furl_at(furl, here)
    else:
        furl = read_furl(GRID_FURL) or fetch_furl(pair)

    if furl is not None and not pair.stopping:
        if grid:
            serve_furl(furl)
        write_file(
            os.path.join(NODE, "private", "introducers.yaml"),
            f"introducers:\n  default:\n    furl: {furl}\n",
        )
        pair.start("storage node", NODE)

    while pair.children:
        pair.reap(block=True)
    # Orphans the nodes left (none expected) go with the container.
    sys.exit(pair.status)


if __name__ == "__main__":
    main()
