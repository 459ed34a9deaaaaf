# The PyTorch peer of bench_conv.c: the convolutional part of the
# Fashion-MNIST CNN at batch 64 (conv 3x3 1->32 pad 1, ReLU, max-pool 2,
# conv 3x3 32->64 pad 1, ReLU, max-pool 2) forward and backward to the
# weights and biases, and the second conv alone with its input gradient;
# medians of 15 runs of 10.
# usage: /usr/bin/python3 tests/bench/conv_torch.py [threads]
import os, sys, time
T = sys.argv[1] if len(sys.argv) > 1 else '1'
os.environ['OMP_NUM_THREADS'] = os.environ['OPENBLAS_NUM_THREADS'] = T
import torch
import torch.nn.functional as F
torch.set_num_threads(int(T))
torch.manual_seed(1)
x = torch.rand(64, 1, 28, 28)
h = torch.rand(64, 32, 14, 14, requires_grad=True)
w1 = (torch.rand(32, 1, 3, 3) * 0.6 - 0.3).requires_grad_()
b1 = torch.zeros(32, requires_grad=True)
w2 = (torch.rand(64, 32, 3, 3) * 0.12 - 0.06).requires_grad_()
b2 = torch.zeros(64, requires_grad=True)

def stack_step():
    a = F.max_pool2d(F.relu(F.conv2d(x, w1, b1, padding=1)), 2)
    y = F.max_pool2d(F.relu(F.conv2d(a, w2, b2, padding=1)), 2)
    torch.autograd.grad(y, [w1, b1, w2, b2], torch.ones_like(y))

def conv2_step():
    y = F.conv2d(h, w2, b2, padding=1)
    torch.autograd.grad(y, [h, w2, b2], torch.ones_like(y))

def median_ms(step):
    step()
    times = []
    for run in range(15):
        t0 = time.perf_counter()
        for rep in range(10):
            step()
        times.append((time.perf_counter() - t0) / 10)
    return sorted(times)[7] * 1e3

c1, c2 = 64 * 32 * 784 * 9, 64 * 64 * 196 * 288
ms = median_ms(stack_step)
print(f"conv_stack_fwd_bwd_ms {ms:.3f} {2 * (2 * c1 + 3 * c2) / ms / 1e6:.1f}")
ms = median_ms(conv2_step)
print(f"conv2_fwd_bwd_ms {ms:.3f} {2 * 3 * c2 / ms / 1e6:.1f}")
