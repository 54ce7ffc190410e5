"""What goes wrong #2: unscaled features and a learning rate past the stability bound.

The crop-yield data of crop_yield.py (temperature in F, rainfall in mm, humidity in %,
never normalised), fitted with nn.Linear, nn.MSELoss and optim.SGD on the full data set.
Gradient descent on a quadratic loss is stable only when lr < 2 / lambda_max, where
lambda_max is the largest eigenvalue of the loss's Hessian. Features in the tens and
hundreds make lambda_max about 1.8e4 here, so the bound is about 1.1e-4: the "small"
lr = 1e-3 is nine times too large. Every step overshoots further along the steepest
direction: the loss grows by two orders of magnitude per step and overflows to inf at
step 14, the weights follow (inf after step 28), and from step 31 the loss is nan. The script still ends
normally (exit code 0): nothing in PyTorch stops it.

    python demos/exploding_lr.py              # diverges
    python demos/exploding_lr.py --lr 1e-4    # just below the bound: stable, but slow
    gradtrace run demos/exploding_lr.py

What gradtrace shows: `gradtrace check` reports `lr_unstable` (lambda_max and the bound
2/lambda_max), `ill_conditioned` (the condition number of the unscaled features) and
`non_finite`: the first step and op whose value was inf or nan, with its source line.
"""

import argparse

import numpy as np
import torch
from torch import nn

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
parser.add_argument("--steps", type=int, default=35, help="full-batch steps (default 35)")
args = parser.parse_args()

torch.manual_seed(42)

inputs = torch.from_numpy(np.array(
    [[73, 67, 43], [91, 88, 64], [87, 134, 58], [102, 43, 37], [69, 96, 70],
     [74, 66, 43], [91, 87, 65], [88, 134, 59], [101, 44, 37], [68, 96, 71],
     [73, 66, 44], [92, 87, 64], [87, 135, 57], [103, 43, 36], [68, 97, 70]],
    dtype='float32'))
targets = torch.from_numpy(np.array(
    [[56, 70], [81, 101], [119, 133], [22, 37], [103, 119],
     [57, 69], [80, 102], [118, 132], [21, 38], [104, 118],
     [57, 69], [82, 100], [118, 134], [20, 38], [102, 120]],
    dtype='float32'))

model = nn.Linear(3, 2)
loss_fn = nn.MSELoss()
opt = torch.optim.SGD(model.parameters(), lr=args.lr)

for step in range(args.steps):
    loss = loss_fn(model(inputs), targets)
    opt.zero_grad()
    loss.backward()
    opt.step()
    with torch.no_grad():
        biggest = model.weight.abs().max().item()
    print(f'step {step:2d}, loss {loss.item():.6g}, largest weight {biggest:.3g}')

