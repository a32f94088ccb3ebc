import sys, time, torch
from torch import nn
torch.set_num_threads(1)
T = 200; which = sys.argv[1]
emb = nn.Embedding(20000, 128); lstm = nn.LSTM(128, 128, batch_first=True); head = nn.Linear(128, 2)
with torch.no_grad():
    if which in ("emb", "all"):
        nn.init.uniform_(emb.weight, -0.05, 0.05)
    if which in ("lstm", "all"):
        nn.init.xavier_uniform_(lstm.weight_ih_l0); nn.init.orthogonal_(lstm.weight_hh_l0)
        lstm.bias_ih_l0.zero_(); lstm.bias_hh_l0.zero_(); lstm.bias_ih_l0[128:256] = 1.0
params = list(emb.parameters()) + list(lstm.parameters()) + list(head.parameters())
opt = torch.optim.Adam(params, fused=True)
x = torch.randint(2, 20000, (64, T)); y = torch.randint(0, 2, (64,))
def step():
    _, (h, _) = lstm(emb(x)); loss = nn.functional.cross_entropy(head(h[-1]), y)
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
for _ in range(2): step()
t = time.perf_counter(); n = 5
for _ in range(n): step()
print(which, f"{(time.perf_counter()-t)/n*1e3:.1f} ms/step")
