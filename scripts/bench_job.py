#!/usr/bin/env python3
"""Job figures for docs/BENCHMARKS.md (issue 7), with real `braid node` processes on loopback
(QUIC, mutual TLS, encrypted gossip):

  failover: 4 nodes run a long job; ROUNDS times each, `kill -9` of a worker (not the leader) and
            of the Raft leader, timed to the first step completed on the new ring (seen through
            the API of a survivor, polled every 5 ms: the epoch without the victim, and the job's
            step past where it stood at the kill), with the survivor's failover timeline; the
            victim is restarted on its data directory and rejoins the job before the next kill.
            A summary line per kind of kill: p50, p90, max.
  scaling:  the same job on N = 1, 2, 3, 4 nodes: mean step time and the part of it spent blocked
            on the all-reduce (what backward did not hide).
  modes:    3 nodes fine-tune models/base-en on a corpus domain with the same token budget in each
            mode: full (fp32 every step), LoRA r=8, DiLoCo H=20 (bf16); held-out loss of the base
            and after, and bytes on the wire per node per step.
  federated: 3 nodes each register a different domain as local data; one federated job; each
            domain's held-out loss before and after; the shard servers' counters (no shard sent).

Prints one JSON line per measurement. LOG_LEVEL sets the nodes' --log-level (warn), and KEEP=1
keeps their logs (failover). Usage:
  /usr/bin/python3 scripts/bench_job.py [--braid bin/braid] [--rounds 5] [--nodes 1,2,3,4] [--only failover|scaling]
"""
import argparse, json, math, os, shutil, signal, socket, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    while True:
        s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", p)); return p
        except OSError:
            pass
        finally:
            u.close()


class Cluster:
    def __init__(self, braid, n, profile, work):
        self.braid, self.n, self.profile, self.work = braid, n, profile, work
        self.ports = {f"n{i}": (free_port(), free_port(), free_port()) for i in range(1, n + 1)}
        self.procs = {}
        run([braid, "ca", "init", "--dir", f"{work}/tls"])
        for name in self.ports:
            run([braid, "ca", "issue", "--dir", f"{work}/tls", "--name", name, "--host", "127.0.0.1"])
        for name in self.ports:
            self.start(name)
        self.api = f"http://127.0.0.1:{self.ports['n1'][2]}"

    def start(self, name):
        g, q, h = self.ports[name]
        seed = self.ports["n1"][0]
        log = open(f"{self.work}/{name}.log", "a")
        self.procs[name] = subprocess.Popen(
            [self.braid, "node", "--name", name, "--data-dir", f"{self.work}/{name}", "--tls-dir", f"{self.work}/tls",
             "--profile", self.profile, "--gossip-addr", f"127.0.0.1:{g}", "--quic-addr", f"127.0.0.1:{q}",
             "--http", f"127.0.0.1:{h}", "--join", f"127.0.0.1:{seed}", "--bootstrap-expect", str(min(self.n, 3)),
             "--log-level", os.environ.get("LOG_LEVEL", "warn")], stdout=log, stderr=log)

    def kill(self, name):
        self.procs[name].send_signal(signal.SIGKILL); self.procs[name].wait()

    def stop(self):
        for p in self.procs.values():
            p.kill()
        for p in self.procs.values():
            p.wait()

    def api_json(self, *cmd, arg=None):
        """Runs `braid CMD --api URL --json [ARG]` and decodes its output (None on failure)."""
        out = subprocess.run([self.braid, *cmd, "--api", self.api, "--json"] + ([arg] if arg else []),
                             capture_output=True, text=True)
        if out.returncode != 0:
            return None
        return json.loads(out.stdout)

    def status(self):
        return self.api_json("status")

    def http(self, name):
        """A direct client of name's API (polling without starting a process per request)."""
        return API(f"http://127.0.0.1:{self.ports[name][2]}", f"{self.work}/{name}/api-token")

    def job(self, jid):
        return self.api_json("job", "status", arg=jid)


class API:
    def __init__(self, url, token_file):
        import urllib.request
        self.url, self.token, self.req = url, open(token_file).read().strip(), urllib.request

    def get(self, path):
        try:
            r = self.req.Request(self.url + path, headers={"Authorization": "Bearer " + self.token})
            with self.req.urlopen(r, timeout=5) as resp:
                return json.load(resp)
        except Exception:
            return None

    def job(self, jid):
        return self.get("/v1/jobs/" + jid)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def wait(what, cond, timeout=120, every=0.02):
    deadline = time.time() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.time() > deadline:
            raise Stuck(f"bench_job: no {what} within {timeout}s")
        time.sleep(every)


class Stuck(Exception):
    """A wait that timed out: the cluster's logs are kept (KEEP=1 keeps them always)."""


def setup_job(c, braid, steps, work):
    wait("cluster", lambda: (s := c.status()) and s["leader"] and len(s["epoch"]["members"]) == c.n)
    src = subprocess.run(["go", "env", "GOROOT"], capture_output=True, text=True).stdout.strip() + "/src"
    ds = f"{work}/ds"
    if not os.path.exists(ds):
        run([braid, "data", "prepare", "--input", f"{src}/net/http", "--input", f"{src}/strings", "--out", ds, "--name", "go",
             "--seq-len", "128", "--shard-mib", "1", "--skip-bad"])
    run([braid, "data", "push", "--api", c.api, "--replicas", str(min(2, c.n)), ds])
    wait("replicas", lambda: (d := c.api_json("data", "status", arg="go")) and d["under_replicated"] == 0 and d.get("placement"))
    jid = run([braid, "job", "submit", "--api", c.api, "--model", f"{ROOT}/models/base-en", "--dataset", "go", "--steps", str(steps),
               "--global-batch", "24", "--micro-batch", "8", "--lr", "1e-3", "--warmup", "5", "--seed", "1"]).strip()
    return jid


def failover(braid, rounds, kills):
    """ROUNDS rounds of each kind of kill in KILLS (worker, leader); one JSON line per round with the
    time from the kill to the first step on the new ring, and the failover timeline of the API node's
    worker (node.EpochChange), then a summary line per kind with p50/p90/max."""
    work = tempfile.mkdtemp(prefix="braid-benchjob-")
    c = Cluster(braid, 4, "lan", work)
    times = {k: [] for k in kills}
    try:
        jid = setup_job(c, braid, 100000, work)
        wait("training", lambda: (j := c.job(jid)) and j["step"] >= 10)
        for r in range(1, rounds + 1):
            for kind in kills:
                st = c.status()
                leader = st["leader"]
                if kind == "leader":
                    victim = leader
                else:
                    victim = next(n for n in ["n2", "n3", "n4"] if n != leader)
                watcher = next(n for n in ["n1", "n2", "n3", "n4"] if n != victim)
                http = c.http(watcher)
                j0 = http.job(jid)
                epoch0, s0 = j0["epoch"], j0["step"]
                t0 = time.time()
                c.kill(victim)
                j = wait("a step on the new ring", lambda: (j := http.job(jid)) and j["epoch"] > epoch0
                         and victim not in j["members"] and j["step"] > s0 and j, every=0.005)
                t1 = time.time()
                own = next((w for w in j.get("workers", []) if w["node"] == watcher), {})
                change = (own.get("epoch_changes") or [{}])[-1]
                times[kind].append(t1 - t0)
                print(json.dumps({"bench": "job-failover", "kill": kind, "round": r, "profile": "lan", "nodes": 4, "victim": victim,
                                  "kill_to_first_step_s": round(t1 - t0, 3), "step_ms": j["step_ms"], "seen_by": watcher,
                                  "timeline_ms": {k: change.get(k) for k in ("suspected_ms", "declared_ms", "committed_ms", "resynced_ms",
                                                                            "connected_ms", "first_step_ms", "resync", "via")}}), flush=True)
                c.start(victim)  # rejoins: fetches the weights and enters at the next epoch
                wait("rejoin", lambda: (j := http.job(jid)) and victim in j["members"] and any(
                    w["node"] == victim and w["phase"] == "training" for w in j.get("workers", [])), timeout=180)
                s1 = http.job(jid)["step"]
                wait("steps after the rejoin", lambda: (j := http.job(jid)) and j["step"] >= s1 + 3)
        for kind, ts in times.items():
            ts = sorted(ts)
            q = lambda p: ts[min(len(ts) - 1, int(math.ceil(p * len(ts))) - 1)]
            print(json.dumps({"bench": "job-failover-summary", "kill": kind, "runs": len(ts), "p50_s": round(q(0.5), 3),
                              "p90_s": round(q(0.9), 3), "max_s": round(ts[-1], 3), "all_s": [round(t, 3) for t in ts]}), flush=True)
    except Stuck as e:
        for p in c.procs.values():
            p.send_signal(signal.SIGQUIT)  # Go writes every goroutine's stack to the log and exits
        time.sleep(2)
        c.stop()
        raise SystemExit(f"{e}; the nodes' logs (with their goroutines' stacks) are kept in {work}")
    except BaseException:
        c.stop(); shutil.rmtree(work, ignore_errors=True)
        raise
    c.stop()
    if os.environ.get("KEEP"):
        print(json.dumps({"bench": "job-failover-logs", "dir": work}), flush=True)
    else:
        shutil.rmtree(work, ignore_errors=True)


def scaling(braid, nodes):
    for n in nodes:
        work = tempfile.mkdtemp(prefix="braid-benchjob-")
        c = Cluster(braid, n, "local", work)
        try:
            jid = setup_job(c, braid, 25, work)
            j = wait("completion", lambda: (j := c.job(jid)) and j["state"] in ("completed", "failed") and j, timeout=600, every=0.2)
            ws = j.get("workers") or []
            # The workers have finished; their last reports carry the means.
            step = max((w.get("mean_step_ms", 0) for w in ws), default=0)
            waitms = max((w.get("mean_wait_ms", 0) for w in ws), default=0)
            print(json.dumps({"bench": "job-scaling", "nodes": n, "state": j["state"], "global_batch": 24, "micro_batch": 8,
                              "mean_step_ms": round(step, 1), "mean_wait_ms": round(waitms, 1),
                              "wait_share": round(waitms / step, 3) if step else None,
                              "tokens_per_s": round(24 * 128 / step * 1e3) if step else None}), flush=True)
        finally:
            c.stop(); shutil.rmtree(work, ignore_errors=True)


def submit(c, braid, dataset, steps, extra):
    return run([braid, "job", "submit", "--api", c.api, "--model", f"{ROOT}/models/base-en", "--dataset", dataset,
                "--steps", str(steps), "--global-batch", "24", "--micro-batch", "8", "--warmup", "10", "--seed", "1",
                "--eval-every", str(steps)] + extra).strip()


def prepare(braid, corpus, out, name):
    """A corpus folder is one document per file; a corpus that is one big file (bio, jargon) is
    cut into documents of 50 lines (as JSONL records), so that some can be held out."""
    args = ["--input", corpus]
    if os.path.isfile(corpus):
        jl = out + ".jsonl"
        with open(corpus, encoding="utf-8", errors="replace") as f, open(jl, "w") as o:
            lines = f.readlines()
            for i in range(0, len(lines), 50):
                o.write(json.dumps({"text": "".join(lines[i:i + 50])}) + "\n")
        args = ["--input", jl, "--format", "jsonl", "--field", "text"]
    run([braid, "data", "prepare", *args, "--out", out, "--name", name, "--seq-len", "128",
         "--shard-mib", "1", "--holdout", "0.1", "--skip-bad"])


def modes(braid, corpus, steps, only_modes):
    work = tempfile.mkdtemp(prefix="braid-benchjob-")
    c = Cluster(braid, 3, "local", work)
    try:
        wait("cluster", lambda: (s := c.status()) and s["leader"] and len(s["epoch"]["members"]) == 3)
        prepare(braid, corpus, f"{work}/ds", "domain")
        run([braid, "data", "push", "--api", c.api, "--replicas", "3", f"{work}/ds"])
        wait("replicas", lambda: (d := c.api_json("data", "status", arg="domain")) and d["under_replicated"] == 0 and d.get("placement"))
        for mode, extra in [("full", ["--lr", "1e-3"]), ("lora-r8", ["--lora-rank", "8"]),
                            ("diloco-h20-bf16", ["--lr", "1e-3", "--diloco", "20", "--wire", "bf16"])]:
            if only_modes and mode not in only_modes:
                continue
            jid = submit(c, braid, "domain", steps, extra)
            t0 = time.time()
            j = wait("completion", lambda: (j := c.job(jid)) and j["state"] in ("completed", "failed") and j, timeout=1800, every=0.5)
            ws = j.get("workers") or []
            print(json.dumps({"bench": "job-mode", "mode": mode, "corpus": os.path.basename(corpus.rstrip("/")), "nodes": 3,
                              "steps": steps, "tokens": steps * 24 * 128, "state": j["state"], "error": j.get("error"),
                              "base_heldout_loss": j.get("base_heldout_loss"), "heldout_loss": j.get("heldout_loss"),
                              "base_ppl": round(math.exp(j["base_heldout_loss"]), 3) if j.get("base_heldout_loss") else None,
                              "ppl": round(math.exp(j["heldout_loss"]), 3) if j.get("heldout_loss") else None,
                              "wire_bytes_per_step": max((w.get("wire_bytes", 0) for w in ws), default=0) // steps,
                              "seconds": round(time.time() - t0, 1)}), flush=True)
    finally:
        c.stop(); shutil.rmtree(work, ignore_errors=True)


def federated(braid, corpora, steps):
    work = tempfile.mkdtemp(prefix="braid-benchjob-")
    c = Cluster(braid, 3, "local", work)
    try:
        wait("cluster", lambda: (s := c.status()) and s["leader"] and len(s["epoch"]["members"]) == 3)
        names = []
        for i, corpus in enumerate(corpora):
            name = ["legal", "bio", "jargon"][i]
            prepare(braid, corpus, f"{work}/{name}", name)
            api = f"http://127.0.0.1:{c.ports[f'n{i + 1}'][2]}"
            run([braid, "data", "register", "--local", "--api", api, f"{work}/{name}"])
            names.append(name)
        wait("placement", lambda: all((d := c.api_json("data", "status", arg=nm)) and d.get("placement") for nm in names))
        jid = run([braid, "job", "submit", "--api", c.api, "--model", f"{ROOT}/models/base-en", "--federated",
                   "--dataset", ",".join(names), "--steps", str(steps), "--global-batch", "24", "--micro-batch", "8",
                   "--lr", "1e-3", "--warmup", "10", "--eval-every", str(steps), "--seed", "1"]).strip()
        j = wait("completion", lambda: (j := c.job(jid)) and j["state"] in ("completed", "failed") and j, timeout=1800, every=0.5)
        for w in j.get("workers") or []:
            unit = names[int(w["node"][1:]) - 1]
            print(json.dumps({"bench": "federated", "node": w["node"], "domain": unit, "steps": steps, "state": j["state"],
                              "base_heldout_loss": w.get("base_heldout_loss"), "heldout_loss": w.get("heldout_loss"),
                              "base_ppl": round(math.exp(w["base_heldout_loss"]), 3) if w.get("base_heldout_loss") else None,
                              "ppl": round(math.exp(w["heldout_loss"]), 3) if w.get("heldout_loss") else None}), flush=True)
    finally:
        c.stop(); shutil.rmtree(work, ignore_errors=True)


def rss_peak_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    return None


def gpt2(braid, base, corpus, steps):
    """GPT-2 124M's shapes with the GPT-2 BPE: a LoRA r=8 job on 3 local nodes; tokens/s and peak
    memory per node."""
    work = tempfile.mkdtemp(prefix="braid-benchjob-")
    c = Cluster(braid, 3, "local", work)
    try:
        wait("cluster", lambda: (s := c.status()) and s["leader"] and len(s["epoch"]["members"]) == 3)
        run([braid, "data", "prepare", "--input", corpus, "--out", f"{work}/ds", "--name", "legal-bpe", "--tokenizer", "gpt2",
             "--seq-len", "128", "--shard-mib", "1", "--holdout", "0.1"])
        run([braid, "data", "push", "--api", c.api, "--replicas", "2", f"{work}/ds"])
        wait("replicas", lambda: (d := c.api_json("data", "status", arg="legal-bpe")) and d["under_replicated"] == 0 and d.get("placement"))
        t0 = time.time()
        jid = run([braid, "job", "submit", "--api", c.api, "--model", base, "--dataset", "legal-bpe", "--steps", str(steps),
                   "--global-batch", "6", "--micro-batch", "2", "--lora-rank", "8", "--warmup", "2", "--seed", "1"]).strip()
        j = wait("completion", lambda: (j := c.job(jid)) and j["state"] in ("completed", "failed") and j, timeout=1800, every=1)
        for w in j.get("workers") or []:
            print(json.dumps({"bench": "gpt2-124m-lora", "node": w["node"], "state": j["state"], "error": j.get("error"),
                              "steps": steps, "global_batch": 6, "micro_batch": 2, "seq_len": 128, "lora_rank": 8,
                              "mean_step_ms": w.get("mean_step_ms"), "tokens_per_s_node": w.get("tokens_per_sec"),
                              "wire_bytes_per_step": w.get("wire_bytes_per_step"), "loss": w.get("loss"),
                              "peak_rss_mb": rss_peak_mb(c.procs[w["node"]].pid), "seconds": round(time.time() - t0, 1)}), flush=True)
    finally:
        c.stop(); shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--braid", default=f"{ROOT}/bin/braid")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--kills", default="worker,leader", help="failover: the kinds of kill, each ROUNDS times")
    ap.add_argument("--nodes", default="1,2,3,4")
    ap.add_argument("--only", default="")
    ap.add_argument("--corpus", default=os.path.join(ROOT, "..", "shared", "corpora", "legal"))
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--modes", default="")
    ap.add_argument("--base", default="/tmp/gpt2-124m", help="gpt2: the GPT-2 124M checkpoint (scripts/gen_reference.py --gpt2-124m DIR)")
    a = ap.parse_args()
    if a.only in ("", "failover"):
        failover(a.braid, a.rounds, a.kills.split(","))
    if a.only in ("", "scaling"):
        scaling(a.braid, [int(x) for x in a.nodes.split(",")])
    if a.only == "modes":
        modes(a.braid, a.corpus, a.steps, [m for m in a.modes.split(",") if m])
    if a.only == "gpt2":
        gpt2(a.braid, a.base, a.corpus, a.steps)
    if a.only == "federated":
        corp = os.path.join(ROOT, "..", "shared", "corpora")
        federated(a.braid, [f"{corp}/legal", f"{corp}/bio/go-terms.txt", f"{corp}/jargon/jargon.txt"], a.steps)
