import sys, time, torch
from torch import nn
torch.set_num_threads(1)
if len(sys.argv) > 3: torch.set_flush_denormal(True)
T = int(sys.argv[1]); mk = sys.argv[2] == "1"
torch.backends.mkldnn.enabled = mk
emb = nn.Embedding(20000, 128); lstm = nn.LSTM(128, 128, batch_first=True); head = nn.Linear(128, 2)
params = list(emb.parameters()) + list(lstm.parameters()) + list(head.parameters())
opt = torch.optim.Adam(params, fused=True)
x = torch.randint(2, 20000, (64, T)); y = torch.randint(0, 2, (64,))
def step():
    _, (h, _) = lstm(emb(x)); loss = nn.functional.cross_entropy(head(h[-1]), y)
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
for _ in range(2): step()
t = time.perf_counter(); n = 5
for _ in range(n): step()
print(T, "mkldnn" if mk else "native", f"{(time.perf_counter()-t)/n*1e3:.1f} ms/step")
