"""cnnc against PyTorch eager, side by side in one run: the table of the
README's Performance section.

    python benches/peers/side_by_side.py [--cnnc target/release/cnnc] [--rounds 3] [--no-fit]

Run it from the repository with the Python of a venv that has torch (see
torch_cnn.py). Each round runs every measurement of cnnc and then of
PyTorch, so both see the same machine load; ratios are taken within a round
and the table gives their range over the rounds, beside each side's range.
Rows: mnist_cnn's training step at batch 1, 32 and 128 (samples/s),
its inference latency at batch 1, celeb8's training step at batch 32, the
whole `cnnc run models/mnist_cnn.cnn` (5 epochs with validation) against
PyTorch's loop for the same epochs, and cnnc's compile time. The header
names the CPU, its vector width and the threads each side uses.
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = [("mnist_cnn", 1), ("mnist_cnn", 32), ("mnist_cnn", 128), ("celeb8", 32)]


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def cnnc_bench(cnnc, model, batch, steps):
    return run_json([cnnc, "bench", f"models/{model}.cnn", "--jit-only", "--batch", str(batch),
                     "--steps", str(steps), "--format", "json"])


def torch_step(model, batch, steps):
    return run_json([sys.executable, os.path.join(HERE, "torch_cnn.py"), "step", model, str(batch), str(steps)])


def same_model(cnnc, model, torch_params):
    """The PyTorch model is the .cnn one: the same count of parameters and
    moving statistics (a cheap check that the two were not edited apart)."""
    params = run_json([cnnc, "check", f"models/{model}.cnn", "--format", "json"])["total_params"]
    if params != torch_params:
        sys.exit(f"{model}: cnnc counts {params} parameters, the PyTorch model {torch_params}: they differ")


def cnnc_fit(cnnc):
    out = tempfile.mkdtemp(prefix="cnnc-side-by-side-")
    try:
        t = time.perf_counter()
        subprocess.run([cnnc, "run", "models/mnist_cnn.cnn", "--out", out], check=True, capture_output=True)
        return time.perf_counter() - t
    finally:
        shutil.rmtree(out, ignore_errors=True)


def torch_fit():
    return run_json([sys.executable, os.path.join(HERE, "torch_cnn.py"), "fit", "models/data/mnist10k", "5"])


def span(values, fmt):
    lo, hi = min(values), max(values)
    return fmt(lo) if fmt(lo) == fmt(hi) else f"{fmt(lo)}–{fmt(hi)}"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cnnc", default="target/release/cnnc")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=20, help="timed steps per measurement (medians)")
    p.add_argument("--no-fit", action="store_true", help="leave out the 5-epoch runs")
    a = p.parse_args()

    rows = {}  # name -> list of (cnnc, torch) per round
    machine = compile_ms = torch_info = None
    for r in range(a.rounds):
        print(f"round {r + 1} of {a.rounds}", file=sys.stderr)
        for model, batch in STEPS:
            c = cnnc_bench(a.cnnc, model, batch, a.steps)
            t = torch_step(model, batch, a.steps)
            machine, torch_info = c["machine"], (t["torch"], t["threads"])
            if r == 0:
                same_model(a.cnnc, model, t["params"])
            key = f"{model} training step, batch {batch} (samples/s)"
            rows.setdefault(key, []).append((c["engines"]["jit"]["train_samples_per_second"],
                                             t["train_samples_per_second"]))
            if (model, batch) == ("mnist_cnn", 1):
                rows.setdefault("mnist_cnn inference latency, batch 1 (µs)", []).append(
                    (c["engines"]["jit"]["inference_seconds"] * 1e6, t["inference_seconds"] * 1e6))
            if (model, batch) == ("mnist_cnn", 32):
                compile_ms = c["compile_seconds"]["train"] * 1e3
        if not a.no_fit:
            rows.setdefault("5 epochs of mnist_cnn on mnist10k, whole run (s)", []).append(
                (cnnc_fit(a.cnnc), torch_fit()["seconds"]))
    peak = run_json([sys.executable, os.path.join(HERE, "torch_cnn.py"), "peak"])["sgemm_gflops"]

    print(f"{machine['cpu']}, {machine['vector']} ({machine['f32_lanes']} f32 lanes), "
          f"cnnc {machine['threads']} threads, PyTorch {torch_info[0]} eager {torch_info[1]} threads; "
          f"{a.rounds} interleaved rounds; sgemm 2048^3 {peak:.0f} GFLOP/s\n")
    print("| what | cnnc | PyTorch eager | cnnc / PyTorch |")
    print("|---|---|---|---|")
    for key, pairs in rows.items():
        lower_is_better = key.endswith("(µs)") or key.endswith("(s)")
        ratios = [t / c if lower_is_better else c / t for c, t in pairs]
        num = (lambda v: f"{v:,.1f}") if key.endswith("(s)") else (lambda v: f"{v:,.0f}")
        print(f"| {key} | {span([c for c, _ in pairs], num)} | {span([t for _, t in pairs], num)} "
              f"| {span(ratios, lambda v: f'{v:.2f}x')} |")
    print(f"\n(ratios: how many times faster cnnc is; cnnc compiles mnist_cnn's training step in {compile_ms:.1f} ms)")


if __name__ == "__main__":
    main()
