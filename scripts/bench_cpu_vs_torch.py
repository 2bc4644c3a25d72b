#!/usr/bin/env python3
"""ferrotron against PyTorch on the CPU, same model, rows of the same token stream, same threads: alternating
rounds of whole-process runs, each round one run of ferrotron and one of every PyTorch variant
(eager and torch.compile of forward+loss, each with glibc's default allocator settings and with
MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ set so that PyTorch stops returning its buffers
to the kernel). Per run: median tokens/s over the steps after the warm-up, peak RSS, and how busy the machine
was with other work meanwhile ("others": CPU time of other processes / (wall time x CPUs),
from /proc/stat less the run's own CPU time). On a shared machine each run first waits (up to
--max-wait seconds) until the other processes have used less than --idle of the CPUs for 3 s,
and a run during which they used more than --idle is run again (up to --tries times; the
last try counts whatever it measured, and the table shows the others' share).
Prints per model the median over rounds of each variant's tokens/s and peak RSS, and the
median over rounds of the per-round ratio ferrotron / variant (paired: both ran in the same
round, minutes apart), plus the load average before and after, and ferrotron's kernel (sys)
time as a share of its whole-process CPU time (startup included, so an upper bound for a step).
Each variant's rate is also given as model GFLOP/s (tokens/s times ferrotron's printed model
FLOPs per token, the same arithmetic on both sides) and as a share of the machine's f32 FMA peak
at the same thread count, measured at the start of every round by scripts/fma-peak.c (built with
`cc -O2 -march=native`, so 512-bit FMAs where the CPU has AVX-512; skipped without a C
compiler): on a VM whose speed drifts between runs, that share is what stays comparable.

  usage: scripts/bench_cpu_vs_torch.py [--rounds 3] [--steps 20] [--warmup 5]
                                       [--models quickstart,llama-75m] [--no-compile] [--tuned-only]
                                       [--idle 0.10] [--max-wait 30] [--tries 4]
Run from the repository root (scripts/bench-cpu-vs-torch.sh installs what it needs first)."""
import argparse, atexit, json, os, re, shutil, statistics, subprocess, sys, tempfile, time

p = argparse.ArgumentParser()
p.add_argument("--rounds", type=int, default=3)
p.add_argument("--steps", type=int, default=20)
p.add_argument("--warmup", type=int, default=5, help="steps left out of each run's median")
p.add_argument("--models", default="quickstart,llama-75m")
p.add_argument("--no-compile", action="store_true")
p.add_argument("--tuned-only", action="store_true", help="PyTorch only with the allocator variables")
p.add_argument("--threads", type=int, default=2)
p.add_argument("--bin", default="target/release/ferrotron")
p.add_argument("--idle", type=float, default=0.10, help="others' CPU share to wait for before a run")
p.add_argument("--max-wait", type=float, default=30, help="seconds to wait for that, per run")
p.add_argument("--tries", type=int, default=4, help="runs of one measurement at most")
a = p.parse_args()

TUNED = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "68719476736"}
MODELS = {
    # ferrotron overrides on recipes/quickstart.toml, and the baseline's arguments
    "quickstart": ([], ["--config", "recipes/models/gpt-quickstart.json", "--batch", "8", "--seq", "128"]),
    "llama-75m": (["model.config=recipes/models/llama-75m.json", "data.seq_len=256", "train.global_batch=4"],
                  ["--config", "recipes/models/llama-75m.json", "--batch", "4", "--seq", "256"]),
}


def busy_jiffies():
    """(busy, total) CPU jiffies of the whole machine so far."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = f[3] + f[4]  # idle + iowait
    return sum(f) - idle, sum(f)


def wait_idle():
    """Waits until the machine (no run of ours going) was less than --idle busy for 3 s."""
    t0 = time.time()
    while True:
        b0, t_0 = busy_jiffies()
        time.sleep(3)
        b1, t_1 = busy_jiffies()
        share = (b1 - b0) / max(t_1 - t_0, 1)
        if share < a.idle or time.time() - t0 > a.max_wait:
            return share


def measure(cmd, env):
    """`measure_once`, again while others were busier than --idle during it (--tries at most)."""
    for _ in range(a.tries):
        out, rss, others = measure_once(cmd, env)
        if others <= a.idle:
            break
    return out, rss, others


def measure_once(cmd, env):
    """Runs cmd in a child interpreter that reports the child's own peak RSS (exact per run)
    and CPU time; returns (stdout, peak RSS MiB, others' CPU share during the run)."""
    wait_idle()
    ncpu = os.cpu_count()
    hz = os.sysconf("SC_CLK_TCK")
    b0, _ = busy_jiffies()
    w0 = time.time()
    wrapper = ("import resource, subprocess, sys, json; "
               "r = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, text=True); "
               "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
               "print(json.dumps({'rc': r.returncode, 'out': r.stdout, "
               "'maxrss_kb': u.ru_maxrss, 'user_s': u.ru_utime, 'sys_s': u.ru_stime}))")
    r = subprocess.run([sys.executable, "-c", wrapper, *cmd], env=env, stdout=subprocess.PIPE, text=True)
    wall = time.time() - w0
    b1, _ = busy_jiffies()
    res = json.loads(r.stdout)
    if res["rc"] != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed (exit {res['rc']})")
    cpu_s = res["user_s"] + res["sys_s"]
    others = max((b1 - b0) / hz - cpu_s, 0.0) / (wall * ncpu)
    measure_once.sys_share = res["sys_s"] / max(cpu_s, 1e-9)
    return res["out"], res["maxrss_kb"] / 1024, others


def fma_peak_probe():
    """The path of scripts/fma-peak.c built for this CPU, or None (no C compiler, or it failed)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    tmp = tempfile.mkdtemp(prefix="bench-fma-")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    exe = os.path.join(tmp, "fma-peak")
    r = subprocess.run([cc, "-O2", "-march=native", "scripts/fma-peak.c", "-o", exe, "-lpthread"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return exe if r.returncode == 0 else None


def fma_peak(exe):
    """The f32 FMA peak in GFLOP/s on --threads threads, measured now (None without a probe)."""
    if exe is None:
        return None
    wait_idle()
    out = subprocess.run([exe, str(a.threads)], stdout=subprocess.PIPE, text=True).stdout
    m = re.search(r"([0-9.]+) GFLOP/s", out)
    return float(m.group(1)) if m else None


def ferrotron(model):
    sets, _ = MODELS[model]
    out = tempfile.mkdtemp(prefix="bench-ferrotron-")
    sets = sets + [f"train.steps={a.steps}", "train.eval_every=0", "checkpoint.enabled=false",
                   "train.sample_tokens=1", f"train.out_dir={out}"]
    cmd = [a.bin, "train", "recipes/quickstart.toml"] + [x for s in sets for x in ("--set", s)]
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    out_text, rss, others = measure(cmd, env)
    sys_shares.setdefault(model, []).append(measure_once.sys_share)
    m = re.search(r"model FLOPs per token: ([0-9.e+]+)", out_text)
    if m:
        flops_per_token[model] = float(m.group(1))
    recs = [json.loads(l) for l in open(f"{out}/metrics.jsonl")]
    shutil.rmtree(out, ignore_errors=True)
    recs = [r for r in recs if "step_time_s" in r]
    med = statistics.median(r["step_time_s"] for r in recs[a.warmup:])
    return recs[0]["tokens"] / med, rss, others


def torch(model, compile_, tuned):
    _, args = MODELS[model]
    cmd = [sys.executable, "scripts/torch_cpu_train_bench.py", *args, "--steps", str(a.steps),
           "--warmup-timing", str(a.warmup), "--threads", str(a.threads)] + (["--compile"] if compile_ else [])
    env = dict(os.environ, **(TUNED if tuned else {}))
    for k in TUNED:
        if not tuned:
            env.pop(k, None)
    out, rss, others = measure(cmd, env)
    res = json.loads(next(l for l in out.splitlines() if l.startswith("RESULT "))[7:])
    return res["tokens_per_s"], rss, others


variants = [(f"torch {'compile' if c else 'eager'}{', tuned malloc' if t else ''}", c, t)
            for c in ([False] if a.no_compile else [False, True])
            for t in ([True] if a.tuned_only else [False, True])]
sys_shares = {}  # per model: ferrotron's kernel (sys) share of its CPU time, per run
flops_per_token = {}  # per model, as ferrotron prints it
peaks = {}  # per model: the FMA peak (GFLOP/s) measured at the start of each round
probe = fma_peak_probe()

load0 = os.getloadavg()
print(f"bench: {a.rounds} rounds x {a.steps} steps (median of steps {a.warmup + 1}-{a.steps}), "
      f"{a.threads} threads each side; load average at start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}", flush=True)
summary = {}
for model in a.models.split(","):
    runs = {"ferrotron": []} | {v[0]: [] for v in variants}
    for rnd in range(a.rounds):
        t0 = time.time()
        peak = fma_peak(probe)
        if peak is not None:
            peaks.setdefault(model, []).append(peak)
        runs["ferrotron"].append(ferrotron(model))
        for name, c, t in variants:
            runs[name].append(torch(model, c, t))
        line = "; ".join(f"{k} {v[-1][0]:.0f} tok/s {v[-1][1]:.0f} MiB (others {v[-1][2]:.0%})"
                         for k, v in runs.items())
        peak_note = f", FMA peak {peak:.0f} GFLOP/s" if peak is not None else ""
        print(f"  {model} round {rnd + 1} ({time.time() - t0:.0f} s, load {os.getloadavg()[0]:.2f}{peak_note}): "
              f"{line}", flush=True)
    summary[model] = runs

print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
for model, runs in summary.items():
    f_tok = [r[0] for r in runs["ferrotron"]]
    f_rss = [r[1] for r in runs["ferrotron"]]
    f_oth = [r[2] for r in runs["ferrotron"]]
    fpt = flops_per_token.get(model)
    pk = peaks.get(model, [])
    print(f"\n{model}: median of {a.rounds} rounds")
    if fpt is not None and len(pk) == a.rounds:
        print(f"model FLOPs per token {fpt:.4g}; f32 FMA peak on {a.threads} threads per round: "
              f"{', '.join(f'{x:.0f}' for x in pk)} GFLOP/s")
    else:
        pk = []
        print("(no FMA peak: scripts/fma-peak.c was not built, or ferrotron printed no FLOPs per token)")

    def rate(tok):
        """Median model GFLOP/s, and median share of the same round's FMA peak."""
        if not pk:
            return "- | -"
        gf = [t * fpt / 1e9 for t in tok]
        share = statistics.median(g / p for g, p in zip(gf, pk))
        return f"{statistics.median(gf):.0f} | {share:.0%}"

    print("| run | tokens/s | ferrotron / run (paired) | model GFLOP/s | share of FMA peak | peak RSS MiB "
          "| run RSS / ferrotron RSS | others' CPU share |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| ferrotron | {statistics.median(f_tok):.0f} | 1.00 | {rate(f_tok)} | {statistics.median(f_rss):.0f} "
          f"| 1.00 | {statistics.median(f_oth):.0%} |")
    for name, *_ in variants:
        tok = [r[0] for r in runs[name]]
        rss = [r[1] for r in runs[name]]
        oth = [r[2] for r in runs[name]]
        ratio = statistics.median(f / t for f, t in zip(f_tok, tok))
        rss_ratio = statistics.median(r / f for r, f in zip(rss, f_rss))
        print(f"| {name} | {statistics.median(tok):.0f} | {ratio:.2f} | {rate(tok)} | {statistics.median(rss):.0f} "
              f"| {rss_ratio:.2f} | {statistics.median(oth):.0%} |")
    print(f"ferrotron's kernel (sys) time, share of its whole-process CPU time: median "
          f"{statistics.median(sys_shares[model]):.2%}, max {max(sys_shares[model]):.2%}")
