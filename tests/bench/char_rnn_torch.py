# The PyTorch peer of examples/char_rnn.c: the same model (Embedding 27x16,
# one LSTM of 128 units, Linear 128->27), the same batches (32 random words
# of the word list, padded, padding masked out of the mean cross-entropy),
# Adam lr 5e-3 and gradient clipping at norm 5. Prints the median time of a
# training step over `steps` steps (after 20 of warm-up), wall clock and CPU
# time of the process (the steadier on a shared machine), and the loss.
# usage: /usr/bin/python3 tests/bench/char_rnn_torch.py [threads] [steps]
import os, random, sys, time
T = sys.argv[1] if len(sys.argv) > 1 else '1'
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 300
os.environ['OMP_NUM_THREADS'] = os.environ['OPENBLAS_NUM_THREADS'] = T
import torch
torch.set_num_threads(int(T))
torch.manual_seed(0)
random.seed(0)

words = [w.strip() for w in open('/usr/share/dict/words')]
words = [w for w in words if 1 <= len(w) <= 20 and all('a' <= c <= 'z' for c in w)]
V, H, B = 27, 128, 32

class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(V, 16)
        self.lstm = torch.nn.LSTM(16, H, batch_first=True)
        self.head = torch.nn.Linear(H, V)
    def forward(self, x):
        return self.head(self.lstm(self.embed(x))[0])

model = Model()
opt = torch.optim.Adam(model.parameters(), lr=5e-3)

def batch():
    pick = [random.choice(words) for _ in range(B)]
    t = max(len(w) for w in pick) + 1
    x = torch.zeros(B, t, dtype=torch.long)
    y = torch.zeros(B, t, dtype=torch.long)
    m = torch.zeros(B, t)
    for i, w in enumerate(pick):
        tok = [ord(c) - 96 for c in w]
        x[i, 1:len(w) + 1] = torch.tensor(tok)
        y[i, :len(w)] = torch.tensor(tok)
        m[i, :len(w) + 1] = 1
    return x, y, m

times, cpu_times, losses = [], [], []
for step in range(steps + 20):
    x, y, m = batch()
    t0, c0 = time.perf_counter(), time.process_time()
    logits = model(x)
    each = torch.nn.functional.cross_entropy(logits.reshape(-1, V), y.reshape(-1), reduction='none')
    loss = (each * m.reshape(-1)).sum() / m.sum()
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    opt.step()
    if step >= 20:
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
        losses.append(loss.item())
times.sort()
cpu_times.sort()
print(f"char_rnn_step_ms {times[len(times) // 2] * 1e3:.2f} cpu_ms {cpu_times[len(cpu_times) // 2] * 1e3:.2f} "
      f"loss_last_100 {sum(losses[-100:]) / len(losses[-100:]):.3f}")
