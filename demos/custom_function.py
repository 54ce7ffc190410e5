"""What goes wrong #3: a custom autograd.Function with a mistake in its backward.

A hand-written Square (forward x * x) used as the squared error of a small full-batch
fit of y = 3x + 0.8, the data of gd_backprop.py. Its backward forgets the 2 of
d(x^2)/dx = 2x, so every gradient is half what it should be. Nothing crashes, and the loss
still goes down (half a gradient is still a descent direction, it is just a smaller step),
so training "works" and the bug is easy to miss: only the final numbers are off.

    python demos/custom_function.py           # the mistake: backward returns x * grad
    python demos/custom_function.py --fixed   # the fix: backward returns 2 * x * grad
    gradtrace run demos/custom_function.py

What gradtrace shows: the Function is one op in the graph, named after its class
(`Square`), with its forward's own ops inside it; its backward node is `SquareBackward`.
`gradtrace check`'s numeric check replays the recorded step in float64, compares
autograd's gradients with central finite differences and fails at the Function: off by a
factor of 2, with the step, the op and this file's line. With --fixed the check passes.
"""

import argparse

import torch

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--fixed", action="store_true", help="use the correct backward (2 * x * grad)")
parser.add_argument("--steps", type=int, default=200)
args = parser.parse_args()


class Square(torch.autograd.Function):
    """x -> x * x, elementwise, with a hand-written backward."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad_output):
        x, = ctx.saved_tensors
        if FIXED:
            return 2 * x * grad_output
        return x * grad_output  # the mistake: d(x^2)/dx is 2x, not x


FIXED = args.fixed

torch.manual_seed(42)
x = torch.rand(50)
y = 3 * x + 0.8

w = torch.zeros(1, requires_grad=True)
b = torch.zeros(1, requires_grad=True)
lr = 0.1

for i in range(args.steps):
    y_hat = x * w + b
    loss = Square.apply(y_hat - y).mean()
    loss.backward()
    with torch.no_grad():
        w -= lr * w.grad
        b -= lr * b.grad
        w.grad.zero_()
        b.grad.zero_()
    if i % 50 == 0:
        print(f'step {i:3d}, loss {loss.item():.6f}')

print(f'after {args.steps} steps: w = {w.item():.4f} (true 3), b = {b.item():.4f} (true 0.8)')
