"""A/B of GradCAM's recording (session 4): the function before commit a5dac30 (copied below as ``old``) against
``gradcam.layer_activations_and_gradients`` now, on the same batches in one process, with the forward limit
(``model(x)`` under ``no_grad``) in the same shuffled rounds. A record of how the figures in benchmarks/README.md
were taken, not maintained code. Usage, from the repository root:
``.venv/bin/python benchmarks/results/cpu-2026-11-26-session4/ab_gradcam_recording.py resnet18 224 16 15``
"""
import sys, time, torch, statistics
sys.path.insert(0, ".")  # the repository root
from focus_core import models
from focus_core.explainers import gradcam
from focus_core.explainers.base import checked_forward
torch.set_num_threads(2)
arch, size, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
m = models.build_model(arch, num_classes=10).eval()
for p in m.parameters(): p.requires_grad_(False)
x = torch.randn(batch, 3, size, size); t = torch.randint(0, 10, (batch,))
layer = gradcam.resolve_layer(m, None)
def old(model, layer, name, inputs, targets):
    caught = []
    def catch(module, args, output):
        caught.append(output); return output.clone()
    h = layer.register_forward_hook(catch)
    try: logits = checked_forward(model, targets)(inputs)
    finally: h.remove()
    a = caught[-1]
    (g,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), a)
    return a.detach(), g, logits
new = gradcam.layer_activations_and_gradients
def fwd():
    with torch.no_grad(): m(x)
def run(f):
    with torch.enable_grad():
        return f(m, layer, None, x.detach().requires_grad_(True), t)
ro, rn = run(old), run(new)
print("max diff acts", (ro[0]-rn[0]).abs().max().item(), "grads", (ro[1]-rn[1]).abs().max().item())
res = {"fwd": [], "old": [], "new": []}
for _ in range(int(sys.argv[4]) if len(sys.argv) > 4 else 9):
    order = [("fwd", fwd), ("old", lambda: run(old)), ("new", lambda: run(new))]
    import random; random.shuffle(order)
    for name, f in order:
        s = time.perf_counter(); f(); res[name].append(time.perf_counter() - s)
md = {k: statistics.median(v) for k, v in res.items()}
print(arch, size, batch, {k: round(v*1000, 1) for k, v in md.items()}, "fwd/old", round(md["fwd"]/md["old"], 3), "fwd/new", round(md["fwd"]/md["new"], 3))
