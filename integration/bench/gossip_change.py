#!/usr/bin/python3
"""gossip_change.py - how fast a change reaches every agent: a rhizome catalog change next to a Serf user event.

Loopback only (127.0.0.1). Builds on ../shared/bench/gossip.py (imported, not copied: its Serf
and Rhizome classes start and stop the agents, wait_all_alive waits for full membership,
stream_open/stream_wait follow Serf's event streams, kill_agents stops every process started).

For each cluster size N (default 10 50 100) and repeat, the two systems interleaved (the order
alternates per repeat), a fresh cluster of N agents (agent 0 is the seed; joiners start with
retry-join once it answers), then --changes changes, one at a time:

  serf     `serf event` (coalesce=false) over RPC from a random agent: time from the call
           until every OTHER agent's RPC event stream delivered it (pushed, ~ms resolution).
           Same Serf settings as `gossip.py --both`: -retry-join flag, a gossip key, LAN profile.
  rhizome  one agent (random, not the seed) runs service `bench-change` with a TCP check
           (interval 1s) on a loopback port this script owns; the script opens or closes a
           listener there (alternately: passing, critical, passing...), which flips the health
           the agent gossips. The clock starts when the ORIGIN agent's
           `GET /v1/catalog/service/bench-change` shows the new health (polled tightly); then
           every other agent is polled over HTTP (a thread pool, keep-alive connections) in
           sweeps until it shows it. Upper bound: the end of the first sweep that saw it;
           lower bound: the start of the last sweep that did not; the sweep time is printed.

Like for like? Both are epidemic broadcasts (piggybacked on gossip every 200 ms to 3 random
members, LAN defaults); a rhizome catalog entry is a signed state entry that push/pull
anti-entropy (every 30 s) would also repair, while a Serf user event is fire-and-forget.
The checks' detection delay (up to the 1 s interval) is not counted: the clock starts at the
origin.

Run (as root: renices to --nice like gossip.py):
  integration/bench/gossip_change.py --rhizome target/release/rhizome --sizes 10 --repeats 1
  integration/bench/gossip_change.py --rhizome target/release/rhizome      (N=10,50,100, 3 repeats)
Output: markdown tables per system and of the ratios rhizome / serf, raw JSONL and a JSON summary
under --out, and a last line `RESULT {json}`.
"""
import argparse
import datetime
import http.client
import importlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_BENCH_DIR = os.environ.get("RHIZOME_BENCH_DIR") or os.path.join(os.path.dirname(REPO), "shared", "bench")
SERVICE = "bench-change"
SYSTEMS = ("serf", "rhizome")
G = None  # the imported gossip.py module (see import_gossip)


def import_gossip(bench_dir):
    """Imports gossip.py from bench_dir (the shared benchmark harness)."""
    path = os.path.join(bench_dir, "gossip.py")
    if not os.path.isfile(path):
        sys.exit(f"ERROR: {path} not found: pass --bench-dir or set RHIZOME_BENCH_DIR")
    sys.path.insert(0, os.path.abspath(bench_dir))
    sys.dont_write_bytecode = True  # leave no __pycache__ in the shared directory
    return importlib.import_module("gossip")


def median(xs):
    return round(statistics.median(xs), 3) if xs else None


def median5(xs):
    return round(statistics.median(xs), 5) if xs else None


# ---------------------------------------------------------------- the health flipper
class Listener:
    """A TCP listener on 127.0.0.1:port that the script opens and closes; accepted connections
    (the agent's health probes) are closed at once by a background thread."""

    def __init__(self, port):
        self.port, self.sock, self.thread, self.stop = port, None, None, threading.Event()

    def open(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        s.settimeout(0.1)
        self.sock, self.stop = s, threading.Event()
        self.thread = threading.Thread(target=self.accept_loop, args=(s, self.stop), daemon=True)
        self.thread.start()

    @staticmethod
    def accept_loop(s, stop):
        while not stop.is_set():
            try:
                c, _ = s.accept()
                c.close()
            except socket.timeout:
                continue
            except OSError:
                return

    def close(self):
        if self.sock is None:
            return
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()
        self.sock = None

    def set(self, up):
        if up and self.sock is None:
            self.open()
        elif not up:
            self.close()


# ---------------------------------------------------------------- rhizome with a service, polled over HTTP
def rhizome_class():
    class RhizomeWithService(G.Rhizome):
        """gossip.Rhizome whose origin agent also runs `bench-change` with a TCP check on
        svc_port, and whose agents are polled over HTTP (keep-alive, one connection per agent)."""

        def __init__(self, args, base, run_dir):
            super().__init__(args, base, run_dir)
            self.svc_port = base + 5000
            self.origin = None
            self.conns, self.locks = {}, {}  # per agent: a kept-alive HTTP connection, used by one thread at a time

        def env(self):
            e = super().env()
            e["rhizome_poll"] = f"HTTP GET /v1/members, /v1/catalog/service/{SERVICE} (keep-alive)"
            return e

        def ports(self, n):
            return super().ports(n) + [self.svc_port]

        def write_config(self, i, cluster_dir):
            cfg_dir = super().write_config(i, cluster_dir)
            if i == self.origin:
                with open(os.path.join(cfg_dir, "agent.hcl"), "a") as f:
                    f.write(f"service {{\n"
                            f"  name = \"{SERVICE}\"\n"
                            f"  port = {self.svc_port}\n"
                            f"  check {{\n"
                            f"    tcp = \"127.0.0.1:{self.svc_port}\"\n"
                            f"    interval = \"1s\"\n"
                            f"    timeout = \"500ms\"\n"
                            f"  }}\n"
                            f"}}\n")
            return cfg_dir

        def get(self, i, path, timeout=5.0):
            """GET path on agent i: (t_start, t_end, parsed JSON or None, error or None)."""
            lock = self.locks.setdefault(i, threading.Lock())
            with lock:
                ts = time.time()
                for attempt in (0, 1):  # a kept-alive connection the agent closed: retry on a new one
                    conn = self.conns.get(i)
                    if conn is None:
                        conn = http.client.HTTPConnection("127.0.0.1", self.http_base + i, timeout=timeout)
                        self.conns[i] = conn
                    try:
                        conn.request("GET", path)
                        r = conn.getresponse()
                        body = r.read()
                    except (OSError, http.client.HTTPException) as e:
                        conn.close()
                        self.conns.pop(i, None)
                        if attempt == 1:
                            return ts, time.time(), None, f"{type(e).__name__}: {e}"
                        continue
                    te = time.time()
                    if r.status != 200:
                        return ts, te, None, f"HTTP {r.status}: {body[:200]!r}"
                    try:
                        return ts, te, json.loads(body), None
                    except ValueError as e:
                        raise G.BenchError(f"agent {G.node_name(i)}: GET {path} did not return JSON ({e}): "
                                           f"{body[:300]!r}")
            raise AssertionError("unreachable")

        def poll_one(self, i):
            """Members of agent i over HTTP, with the contract gossip.py checks on the CLI."""
            ts, te, arr, err = self.get(i, "/v1/members")
            if arr is None:
                return ts, te, None, err
            if not isinstance(arr, list) or not all(
                    isinstance(m, dict) and isinstance(m.get("node"), str) and m.get("status") in G.STATUSES
                    for m in arr):
                raise G.BenchError(f"agent {G.node_name(i)}: GET /v1/members is not an array of "
                                   f"{{node, address, status, incarnation}}: {json.dumps(arr)[:300]}")
            return ts, te, [(m["node"], m["status"]) for m in arr], None

        def health_one(self, i):
            """(t_start, t_end, health of the origin's bench-change instance on agent i: passing|critical|
            node_down|absent, or None when the agent did not answer)."""
            ts, te, arr, _ = self.get(i, f"/v1/catalog/service/{SERVICE}")
            if arr is None:
                return ts, te, None
            if not isinstance(arr, list):
                raise G.BenchError(f"agent {G.node_name(i)}: GET /v1/catalog/service/{SERVICE} is not an "
                                   f"array: {json.dumps(arr)[:300]}")
            want = G.node_name(self.origin)
            hs = [x.get("health") for x in arr if isinstance(x, dict) and x.get("node") == want]
            return ts, te, (hs[0] if hs else "absent")

        def health(self, idxs):
            futs = {i: self.pool.submit(self.health_one, i) for i in idxs}
            return {i: f.result() for i, f in futs.items()}

        def stop_cluster(self):
            for c in self.conns.values():
                c.close()
            self.conns = {}
            super().stop_cluster()

    return RhizomeWithService


# ---------------------------------------------------------------- measurements
def change_stats(seen, lower, n_targets, extra):
    """One change: per-agent upper bounds `seen` and lower bounds `lower` (s from t0)."""
    d = sorted(seen.values())
    rec = {"reached": len(d), "targets": n_targets,
           "all_s": round(d[-1], 4) if len(d) == n_targets else None,
           "all_lower_s": round(max(lower.values()), 4) if len(d) == n_targets and lower else None,
           "p50_agent_s": round(statistics.median(d), 4) if d else None,
           "per_agent_s": [round(x, 4) for x in d]}
    rec.update(extra)
    return rec


def rhizome_changes(system, n, args, logdir, rec):
    """Flips the origin's health --changes times; per change, the time until every other agent sees it."""
    origin = system.origin
    others = [i for i in range(n) if i != origin]
    listener = Listener(system.svc_port)
    changes = []
    try:
        # every agent must list the instance (critical: nothing listens yet) before the first change
        t_w = time.time()
        pending = set(range(n))
        while pending and time.time() - t_w < args.bound:
            for i, (_, _, h) in system.health(sorted(pending)).items():
                if h == "critical":
                    pending.discard(i)
            G.check_agents(logdir=logdir)
            time.sleep(args.sweep_pause)
        if pending:
            raise G.BenchError(f"rhizome N={n}: {len(pending)} agents never listed {SERVICE} on "
                               f"{G.node_name(origin)} as critical within {args.bound} s")
        rec["initial_catalog_all_s"] = round(time.time() - t_w, 3)
        for k in range(args.changes):
            want = "passing" if k % 2 == 0 else "critical"
            time.sleep(args.gap)
            t_flip = time.time()
            listener.set(want == "passing")
            # the origin: tight polls until its own catalog shows the new health
            t0, origin_lower, polls = None, t_flip, 0
            while time.time() - t_flip < args.bound:
                ts, te, h = system.health_one(origin)
                polls += 1
                if h == want:
                    t0 = te
                    break
                origin_lower = ts
                time.sleep(0.001)
            if t0 is None:
                G.check_agents(logdir=logdir)
                raise G.BenchError(f"rhizome N={n}: origin {G.node_name(origin)} never showed {want} "
                                   f"within {args.bound} s (check on 127.0.0.1:{system.svc_port})")
            # every other agent, in sweeps, only those that have not seen it yet
            seen, lower, sweeps = {}, {i: 0.0 for i in others}, []
            while len(seen) < len(others) and time.time() - t0 < args.bound:
                todo = [i for i in others if i not in seen]
                t_s = time.time()
                res = system.health(todo)
                t_e = time.time()
                sweeps.append(t_e - t_s)
                for i, (_, _, h) in res.items():
                    if h == want:
                        seen[i] = t_e - t0
                    else:
                        lower[i] = max(lower[i], t_s - t0)
                G.check_agents(logdir=logdir)
                if len(seen) < len(others):
                    time.sleep(args.sweep_pause)
            c = change_stats(seen, lower, len(others), {
                "to": want, "origin": G.node_name(origin), "check_detect_s": round(t0 - t_flip, 3),
                "origin_resolution_s": round(t0 - origin_lower, 4), "origin_polls": polls,
                "sweeps": len(sweeps), "sweep_s_median": round(statistics.median(sweeps), 5) if sweeps else None,
                "sweep_all_agents_s": round(sweeps[0], 5) if sweeps else None})
            if c["all_s"] is None:
                c["not_reached"] = [G.node_name(i) for i in others if i not in seen]
            changes.append(c)
            print(f"  rhizome N={n}: {G.node_name(origin)} -> {want}: all {c['all_s']} s "
                  f"(lower {c['all_lower_s']}), p50 agent {c['p50_agent_s']} s, {len(sweeps)} sweeps of "
                  f"~{c['sweep_s_median']} s; check detected after {c['check_detect_s']} s", flush=True)
    finally:
        listener.close()
    return changes


def serf_changes(system, n, args, logdir, rec):
    """--changes user events (coalesce=false) from random agents; time until every other agent's stream has it."""
    system.ensure_ctl(n)
    streams = G.stream_open({i: system.rpc_base + i for i in range(n)}, "user")
    changes = []
    try:
        for k in range(args.changes):
            time.sleep(args.gap)
            src = random.randrange(n)
            name = f"bench-change-{k}-{random.randrange(1 << 30)}"
            others = {i: s for i, s in streams.items() if i != src}
            t0 = time.time()
            system.ctl[src].call("event", {"Name": name, "Payload": b"x", "Coalesce": False})
            got = G.stream_wait(others, lambda o, nm=name: o.get("Event") == "user" and o.get("Name") == nm,
                                t0, args.bound)
            # the origin's own stream got it too; drain it so it does not pile up
            G.stream_wait({src: streams[src]}, lambda o, nm=name: o.get("Name") == nm, t0, 2.0)
            G.check_agents(logdir=logdir)
            c = change_stats(got, {}, len(others), {"origin": G.node_name(src)})
            c["all_lower_s"] = c["all_s"]  # pushed to the script: no polling interval
            if c["all_s"] is None:
                c["not_reached"] = [G.node_name(i) for i in others if i not in got]
            changes.append(c)
            print(f"  serf N={n}: event from {G.node_name(src)}: all {c['all_s']} s, "
                  f"p50 agent {c['p50_agent_s']} s", flush=True)
    finally:
        for s in streams.values():
            s.close()
    return changes


def one_cluster(system, n, rep, args, work, rawf):
    logdir = os.path.join(work, f"{system.name}-n{n}-r{rep}")
    shutil.rmtree(logdir, ignore_errors=True)
    os.makedirs(logdir)
    busy = G.ports_busy(system.ports(n))
    if busy:
        raise G.BenchError(f"{system.name}: ports busy: {busy[:10]} (another run? choose another --port-base)")
    rec = {"system": system.name, "n": n, "rep": rep}
    if system.name == "rhizome":
        system.origin = random.randrange(1, n)
    try:
        t0 = system.start_cluster(n, logdir, rec)
        seen, _, sweeps = G.wait_all_alive(system, n, t0, args.bound, logdir)
        rec["converge_all_s"] = round(max(seen.values()), 3) if len(seen) == n else None
        print(f"  {system.name} N={n} r{rep}: {len(seen)}/{n} agents see N alive after {rec['converge_all_s']} s",
              flush=True)
        if len(seen) < n:
            raise G.BenchError(f"{system.name} N={n}: only {len(seen)}/{n} agents saw N alive within {args.bound} s; "
                               f"logs in {logdir}")
        time.sleep(args.settle)
        measure = rhizome_changes if system.name == "rhizome" else serf_changes
        rec["changes"] = measure(system, n, args, logdir, rec)
    finally:
        system.stop_cluster()
    rawf.write(json.dumps(rec) + "\n")
    rawf.flush()
    return rec


# ---------------------------------------------------------------- summary
KEYS = ("change_all_p50_s", "change_all_max_s", "change_all_lower_p50_s", "change_all_lower_max_s",
        "change_agent_p50_s")


def summarize(recs):
    out = {}
    for sysname in [s for s in SYSTEMS if any(r["system"] == s for r in recs)]:
        out[sysname] = {}
        for n in sorted({r["n"] for r in recs if r["system"] == sysname}):
            cs = [c for r in recs if r["system"] == sysname and r["n"] == n for c in r.get("changes", [])]
            done = [c for c in cs if c["all_s"] is not None]
            d = {"repeats": sum(1 for r in recs if r["system"] == sysname and r["n"] == n),
                 "changes": len(cs), "not_reached_all": len(cs) - len(done),
                 "change_all_p50_s": median([c["all_s"] for c in done]),
                 "change_all_max_s": max((c["all_s"] for c in done), default=None),
                 "change_all_lower_p50_s": median([c["all_lower_s"] for c in done]),
                 "change_all_lower_max_s": max((c["all_lower_s"] for c in done), default=None),
                 "change_agent_p50_s": median([c["p50_agent_s"] for c in cs if c["p50_agent_s"] is not None]),
                 "change_all_s_each": [c["all_s"] for c in cs],
                 "converge_all_s_each_repeat": [r.get("converge_all_s") for r in recs
                                                if r["system"] == sysname and r["n"] == n]}
            if sysname == "rhizome":
                d["sweep_s_median"] = median5([c["sweep_s_median"] for c in cs if c["sweep_s_median"] is not None])
                d["sweep_all_agents_s_median"] = median5([c["sweep_all_agents_s"] for c in cs
                                                          if c["sweep_all_agents_s"] is not None])
                d["origin_resolution_s_max"] = max((c["origin_resolution_s"] for c in cs), default=None)
                d["check_detect_s_median"] = median([c["check_detect_s"] for c in cs])
            out[sysname][n] = d
    return out


def ratios(by_sys):
    out = {}
    if "serf" not in by_sys or "rhizome" not in by_sys:
        return out
    for n, s in by_sys["serf"].items():
        r = by_sys["rhizome"].get(n)
        if r:
            out[n] = {k: (round(r[k] / s[k], 2) if r.get(k) is not None and s.get(k) else None) for k in KEYS}
    return out


def fmt_md(S):
    L = ["# Change propagation: rhizome catalog change vs Serf user event (loopback)", "",
         "Seconds; from the moment the change exists at its origin (Serf: the `event` RPC call; rhizome: the "
         "origin's own catalog shows the new health) until every other agent has it. p50 and max are over "
         "changes; \"agent p50\" is the median agent of a change (median over changes). rhizome figures are "
         "upper bounds (end of the first poll sweep that showed it), lower bounds beside them; Serf events "
         "are pushed to the script (no polling).", ""]
    for sysname, by_n in S["by_system"].items():
        L += [f"## {sysname}", ""]
        if sysname == "rhizome":
            L += ["| N | all agents p50 | max | lower bound p50, max | agent p50 | each change "
                  "| poll sweep s: all agents, median | check detect s (not counted) | not reached "
                  "| all alive after (each repeat) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
            for n, d in by_n.items():
                L.append(f"| {n} | {d['change_all_p50_s']} | {d['change_all_max_s']} | "
                         f"{d['change_all_lower_p50_s']}, {d['change_all_lower_max_s']} | {d['change_agent_p50_s']} | "
                         f"{', '.join(str(x) for x in d['change_all_s_each'])} | "
                         f"{d['sweep_all_agents_s_median']}, {d['sweep_s_median']} | "
                         f"{d['check_detect_s_median']} | {d['not_reached_all']} | "
                         f"{', '.join(str(x) for x in d['converge_all_s_each_repeat'])} |")
        else:
            L += ["| N | all agents p50 | max | agent p50 | each change | not reached | all alive after (each repeat) |",
                  "|---|---|---|---|---|---|---|"]
            for n, d in by_n.items():
                L.append(f"| {n} | {d['change_all_p50_s']} | {d['change_all_max_s']} | {d['change_agent_p50_s']} | "
                         f"{', '.join(str(x) for x in d['change_all_s_each'])} | {d['not_reached_all']} | "
                         f"{', '.join(str(x) for x in d['converge_all_s_each_repeat'])} |")
        L.append("")
    if S["ratios_rhizome_over_serf"]:
        L += ["## Ratios rhizome / serf (same run)", "", "< 1: rhizome faster. Lower-bound ratios use rhizome's "
              "lower bounds over Serf's (exact) times.", "",
              "| N | all agents p50 | all agents max | lower bound p50 | lower bound max | agent p50 |",
              "|---|---|---|---|---|---|"]
        for n, d in S["ratios_rhizome_over_serf"].items():
            L.append(f"| {n} | " + " | ".join(str(d[k]) for k in KEYS) + " |")
    return "\n".join(L) + "\n"


# ---------------------------------------------------------------- main
def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--rhizome", metavar="PATH", help="the rhizome binary (target/release/rhizome)")
    ap.add_argument("--bench-dir", default=DEFAULT_BENCH_DIR,
                    help="where gossip.py is (default $RHIZOME_BENCH_DIR or ../shared/bench beside the repo)")
    ap.add_argument("--only", choices=SYSTEMS, help="run one system only")
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 100])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--changes", type=int, default=6,
                    help="changes per cluster (rhizome: alternately up and down; default 6)")
    ap.add_argument("--gap", type=float, default=2.0, help="seconds between two changes")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds after full membership before the first change")
    ap.add_argument("--bound", type=float, default=120.0, help="max seconds for any single wait")
    ap.add_argument("--poll-workers", type=int, default=8, help="parallel HTTP requests per rhizome poll sweep")
    ap.add_argument("--sweep-pause", type=float, default=0.005, help="seconds between two rhizome poll sweeps")
    ap.add_argument("--port-base", type=int, default=20000,
                    help="serf BASE+i (gossip), BASE+1000+i (RPC); rhizome BASE+2000+i gossip, +3000 data, "
                         "+4000 http; the checked port BASE+5000")
    ap.add_argument("--out", default="bench-results", help="directory for results (default ./bench-results)")
    ap.add_argument("--work", default=None, help="directory for agent logs, configs and data "
                                                 "(default: gossip.py's, $BENCH_WORK or /tmp/rhizome-bench)")
    ap.add_argument("--nice", type=int, default=-15, help="niceness for this script and the agents (root only)")
    args = ap.parse_args()
    if any(n < 2 or n > 1000 for n in args.sizes):
        ap.error("sizes must be within 2..1000")
    if not 1024 <= args.port_base <= 65535 - 5000:
        ap.error("--port-base out of range")
    if args.only != "serf" and not args.rhizome:
        ap.error("--rhizome PATH is required (unless --only serf)")
    if args.changes < 1 or args.repeats < 1:
        ap.error("--changes and --repeats must be positive")
    # what gossip.py's classes read from their args: the settings of `gossip.py --both`
    args.serf_join, args.serf_encrypt, args.serf_poll = "flag", True, "rpc"
    args.both = args.only is None
    return args


def main():
    global G
    args = parse_args()
    G = import_gossip(args.bench_dir)
    systems = [args.only] if args.only else list(SYSTEMS)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))  # run the cleanup in `finally`
    if args.nice and os.geteuid() == 0:
        os.nice(args.nice)
    ts = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    work = os.path.join(args.work or G.DEFAULT_WORK, f"gossip-change-{ts}")
    os.makedirs(work, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    env = {"systems": systems, "kernel": os.uname().release, "cpus": os.cpu_count(), "args": vars(args),
           "gossip_py": os.path.abspath(G.__file__), "niceness": os.nice(0),
           "loadavg_at_start": open("/proc/loadavg").read().split()[:3], "started": ts}
    rawp = os.path.join(args.out, f"gossip-change-raw-{ts}.jsonl")
    recs, objs, rawf = [], {}, None
    t_start = time.time()
    try:
        if "serf" in systems:
            objs["serf"] = G.Serf(args, args.port_base, work)
            env.update(objs["serf"].env())
        if "rhizome" in systems:
            objs["rhizome"] = rhizome_class()(args, args.port_base, work)
            objs["rhizome"].prepare(max(args.sizes))
            env.update(objs["rhizome"].env())
        rawf = open(rawp, "w")
        rawf.write(json.dumps({"env": env}) + "\n")
        for n in args.sizes:
            for rep in range(args.repeats):
                for sysname in (systems if rep % 2 == 0 else systems[::-1]):
                    if time.time() - t_start > 4 * 3600:
                        raise G.BenchError("run exceeded its 4 h bound")
                    recs.append(one_cluster(objs[sysname], n, rep, args, work, rawf))
                    time.sleep(3)
    except G.BenchError as e:
        G.kill_agents(grace=2.0)
        print(f"ERROR: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    finally:
        G.kill_agents(grace=2.0)
        for o in objs.values():
            o.close()
        if rawf:
            rawf.close()
    by_sys = summarize(recs)
    S = {"env": env, "by_system": by_sys, "ratios_rhizome_over_serf": ratios(by_sys)}
    sj = os.path.join(args.out, f"gossip-change-summary-{ts}.json")
    sm = os.path.join(args.out, f"gossip-change-summary-{ts}.md")
    with open(sj, "w") as f:
        json.dump(S, f, indent=1)
    md = fmt_md(S)
    with open(sm, "w") as f:
        f.write(md)
    print(md)
    print(f"files: {rawp} {sj} {sm} (agent logs: {work})")
    extra = ("changes", "not_reached_all", "sweep_s_median", "sweep_all_agents_s_median")
    result = {s: {str(n): {k: d.get(k) for k in KEYS + extra}
                  for n, d in by_n.items()} for s, by_n in by_sys.items()}
    result["ratios_rhizome_over_serf"] = {str(n): d for n, d in S["ratios_rhizome_over_serf"].items()}
    result["summary_json"] = sj
    print("RESULT " + json.dumps(result, separators=(",", ":")), flush=True)


if __name__ == "__main__":
    main()
