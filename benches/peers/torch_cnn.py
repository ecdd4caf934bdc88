"""PyTorch eager running what `cnnc bench` and `cnnc run` run, for a side by
side comparison (benches/peers/side_by_side.py calls it; it prints JSON).

The models are models/mnist_cnn.cnn and models/celeb8.cnn written in
PyTorch, layer for layer (NCHW, PyTorch's native layout), with the same
optimizer as their `train` blocks: Adam with Keras's defaults (learning
rate 1e-3, epsilon 1e-7).

    python benches/peers/torch_cnn.py step MODEL BATCH [STEPS]
        a training step and an inference at BATCH on a random batch: the
        median of STEPS (default 20) after two warm-up steps, as cnnc bench
    python benches/peers/torch_cnn.py fit DATA_DIR [EPOCHS]
        mnist_cnn on mnist10k as `cnnc run models/mnist_cnn.cnn`: batch 32,
        shuffled each epoch, validation on the test split after every epoch
    python benches/peers/torch_cnn.py peak
        the machine's sgemm rate (2048^3), the peak to quote GFLOP/s against

It needs torch in a venv outside the repository:
    python3 -m venv ~/venvs/peers && ~/venvs/peers/bin/pip install torch numpy
"""
import gzip, json, os, struct, sys, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(os.cpu_count() or 1)


def mnist_cnn():
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(),
        nn.Conv2d(32, 32, 3), nn.ReLU(),
        nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(),
        nn.Linear(12 * 12 * 32, 128), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(128, 10))


def celeb8():
    # Keras's BatchNormalization: momentum 0.99 (PyTorch counts 1 - that),
    # epsilon 1e-3.
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01),
                nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(
        *block(3, 32), *block(32, 64),
        nn.Conv2d(64, 128, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(7 * 7 * 128, 128), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(128, 8))


MODELS = {"mnist_cnn": (mnist_cnn, (1, 28, 28), 10), "celeb8": (celeb8, (3, 64, 64), 8)}


def adam(model):
    return torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)


def median(f, steps):
    f(); f()
    times = []
    for _ in range(steps):
        t = time.perf_counter(); f(); times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def step(name, batch, steps):
    build, shape, classes = MODELS[name]
    torch.manual_seed(7)
    model = build(); opt = adam(model)
    x = torch.rand(batch, *shape); y = torch.randint(0, classes, (batch,))

    def train():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    model.train(); t = median(train, steps)
    model.eval()
    with torch.no_grad():
        i = median(lambda: model(x), steps)
    params = sum(p.numel() for p in model.parameters()) + sum(b.numel() for n, b in model.named_buffers()
                                                              if not n.endswith("num_batches_tracked"))
    return {"model": name, "batch": batch, "params": params,
            "train_step_seconds": t, "train_samples_per_second": batch / t,
            "inference_seconds": i, "inference_samples_per_second": batch / i}


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    if struct.unpack(">I", data[:4])[0] == 0x803:
        n, r, c = struct.unpack(">III", data[4:16])
        return np.frombuffer(data, np.uint8, offset=16).reshape(n, 1, r, c)
    return np.frombuffer(data, np.uint8, offset=8)


def fit(root, epochs):
    start = time.perf_counter()
    load = lambda split: (torch.from_numpy(idx(f"{root}/{split}-images-idx3-ubyte.gz").astype(np.float32) / 255),
                          torch.from_numpy(idx(f"{root}/{split}-labels-idx1-ubyte.gz").astype(np.int64)))
    (x, y), (xv, yv) = load("train"), load("t10k")
    torch.manual_seed(1)
    model = mnist_cnn(); opt = adam(model)
    for _ in range(epochs):
        model.train()
        for batch in torch.randperm(len(x)).split(32):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            correct = sum((model(xb).argmax(1) == yb).sum().item() for xb, yb in zip(xv.split(32), yv.split(32)))
    return {"epochs": epochs, "seconds": time.perf_counter() - start, "val_accuracy": correct / len(xv)}


def peak():
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    t = median(lambda: a @ b, 10)
    return {"sgemm_gflops": 2 * 2048 ** 3 / t / 1e9}


if __name__ == "__main__":
    what, args = sys.argv[1], sys.argv[2:]
    if what == "step":
        out = step(args[0], int(args[1]), int(args[2]) if len(args) > 2 else 20)
    elif what == "fit":
        out = fit(args[0], int(args[1]) if len(args) > 1 else 5)
    elif what == "peak":
        out = peak()
    else:
        sys.exit(__doc__)
    out["torch"] = torch.__version__
    out["threads"] = torch.get_num_threads()
    print(json.dumps(out))
