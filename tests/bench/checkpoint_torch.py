# The PyTorch peer of bench_checkpoint.c: a 64-layer MLP of width 1024
# (Linear + ReLU, the last linear), batch 64, MSE, SGD lr 1e-3, trained
# plainly and with torch.utils.checkpoint.checkpoint_sequential in 8 and 16
# segments. Each setting runs in a process of its own, so that its peak
# resident memory (ru_maxrss: parameters and gradients included) is its own;
# times are medians of 3 steps after one warm-up, wall and CPU.
# usage: /usr/bin/python3 tests/bench/checkpoint_torch.py [threads]
import os, resource, subprocess, sys, time
T = sys.argv[1] if len(sys.argv) > 1 else '2'
os.environ['OMP_NUM_THREADS'] = os.environ['OPENBLAS_NUM_THREADS'] = T

def run(segments):
    import torch
    from torch.utils.checkpoint import checkpoint_sequential
    torch.set_num_threads(int(T))
    torch.manual_seed(0)
    layers = []
    for i in range(64):
        layers.append(torch.nn.Linear(1024, 1024))
        if i < 63:
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    x, y = torch.randn(64, 1024), torch.randn(64, 1024)
    wall, cpu = [], []
    for step in range(4):
        t0, c0 = time.perf_counter(), time.process_time()
        pred = checkpoint_sequential(net, segments, x) if segments else net(x)
        torch.nn.functional.mse_loss(pred, y).backward()
        opt.step()
        opt.zero_grad(set_to_none=False)
        if step:
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{segments} {sorted(wall)[1]:.3f} {sorted(cpu)[1]:.3f} {rss:.1f}")

if len(sys.argv) > 2:
    run(int(sys.argv[2]))
    sys.exit(0)
base = None
for segments in (0, 8, 16):
    out = subprocess.run([sys.executable, __file__, T, str(segments)], capture_output=True, text=True)
    s, wall, cpu, rss = out.stdout.split()
    wall, cpu, rss = float(wall), float(cpu), float(rss)
    base = base or (wall, cpu, rss)
    label = f"{segments} segments" if segments else "plain"
    print(f"{label:12s} peak RSS {rss:7.1f} MiB  median step {wall:.3f} s ({wall / base[0]:.2f}x), "
          f"CPU {cpu:.3f} s ({cpu / base[1]:.2f}x)")
