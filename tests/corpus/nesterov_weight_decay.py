# SGD with Nesterov momentum and weight decay (the decay is the optimizer's: the gradient
# autograd computes is that of the loss alone), and a learning-rate scheduler.
import torch
from torch import nn

from _twin import bend

STEPS = 3
L1 = {"enc.weight", "enc.bias"}
TWINS = {"off_2pct": ("enc.weight", L1),
         "no_zero_grad": ("dec.weight", L1 | {"dec.weight", "dec.bias"})}


def main(steps=STEPS, twin=None):
    torch.manual_seed(17)
    X = torch.rand(40, 8)
    enc, dec = nn.Linear(8, 3), nn.Linear(3, 8)
    params = [*enc.parameters(), *dec.parameters()]
    opt = torch.optim.SGD(params, lr=0.5, momentum=0.9, nesterov=True, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for step in range(steps):
        if twin != "no_zero_grad":
            opt.zero_grad()
        recon = torch.sigmoid(dec(torch.relu(bend(enc(X), twin))))
        loss = nn.functional.binary_cross_entropy(recon, X)
        loss.backward()
        opt.step()
        sched.step()
    print(loss.item())


if __name__ == "__main__":
    main()
