# The PyTorch peer of bench_matmul.c: one dense-layer step, x[64,784]·W[784,512]
# forward and backward to both operands, median of 15 runs of 10.
# usage: /usr/bin/python3 tests/bench/matmul_torch.py [threads]
import os, sys, time
T = sys.argv[1] if len(sys.argv) > 1 else '1'
os.environ['OMP_NUM_THREADS'] = os.environ['OPENBLAS_NUM_THREADS'] = T
import torch
torch.set_num_threads(int(T))
x = torch.rand(64, 784, requires_grad=True)
W = torch.rand(784, 512, requires_grad=True)
times = []
for run in range(15):
    t0 = time.perf_counter()
    for rep in range(10):
        y = x @ W
        y.backward(torch.ones_like(y))
    times.append((time.perf_counter() - t0) / 10)
times.sort()
median = times[7]
print(f"matmul_fwd_bwd_ms {median * 1e3:.3f} {3 * 2 * 64 * 784 * 512 / median / 1e9:.1f}")
