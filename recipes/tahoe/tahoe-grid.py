"""A one-box Tahoe-LAFS grid, the bundle's command (PID 1 of its container).

On first start it makes the node directories in the data volume, both at
once: an introducer, and a storage node with its web gateway that stores
every file whole on itself (shares.needed = happy = total = 1). At every
start it runs the introducer, waits for the fURL the introducer keeps in
private/introducer.furl (written on its first run), gives it to the node
(private/introducers.yaml) and runs the node; both stay in the
foreground. When either exits, it stops the other and exits non-zero, so
the supervisor restarts the pair. SIGTERM stops both. Settings come from
the environment (the manifest's [run.env]).
"""

import os
import shutil
import signal
import subprocess
import sys
import time

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


def read_furl(path):
    """The introducer's fURL (pb://TUBID@LOCATIONS/SWISSNUM), once it has
    written all of it."""
    try:
        with open(path, encoding="utf-8") as f:
            furl = f.read().strip()
    except FileNotFoundError:
        return None
    tub, _, rest = furl.removeprefix("pb://").partition("@")
    if furl.startswith("pb://") and tub and "/" in rest and not rest.endswith("/"):
        return furl
    return None


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


def main():
    pair = Pair()
    signal.signal(signal.SIGTERM, lambda *_: pair.stop("SIGTERM"))
    signal.signal(signal.SIGINT, lambda *_: pair.stop("SIGINT"))
    os.makedirs(STATE, exist_ok=True)
    os.makedirs(os.environ.get("TMPDIR", os.path.join(STATE, "tmp")), exist_ok=True)

    made = create({
        INTRODUCER: [
            "create-introducer",
            f"--port=tcp:{INTRODUCER_PORT}",
            f"--location=tcp:127.0.0.1:{INTRODUCER_PORT}",
        ],
        NODE: [
            "create-node",
            f"--nickname={os.environ.get('TAHOE_NICKNAME', 'nuvol')}",
            f"--port=tcp:{NODE_PORT}",
            f"--location=tcp:127.0.0.1:{NODE_PORT}",
            f"--webport=tcp:{WEB_PORT}:interface=0.0.0.0",
            "--shares-needed=1",
            "--shares-happy=1",
            "--shares-total=1",
        ],
    })
    if made:
        log(f"made {', '.join(made)}")
    set_option(os.path.join(NODE, "tahoe.cfg"), "storage", "reserved_space", RESERVED)
    if pair.stopping:
        sys.exit(0)
    pair.start("introducer", INTRODUCER)

    furl_file = os.path.join(INTRODUCER, "private", "introducer.furl")
    deadline = time.monotonic() + FURL_WAIT_S
    furl = None
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

    if furl is not None and not pair.stopping:
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
