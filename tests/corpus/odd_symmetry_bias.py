# A linear model X @ w + b on data symmetric about 0 with the odd target x^3: the bias's
# true gradient is exactly 0 at every step (float32, mean reduction).
import torch

STEPS = 3
TWINS = {"no_zero_grad": ("w", {"w", "b"})}


def main(steps=STEPS, twin=None):
    x = torch.linspace(-2, 2, 401).reshape(-1, 1)
    y = x ** 3
    w = torch.zeros(1, 1, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    for _ in range(steps):
        loss = ((x @ w + b - y) ** 2).mean()
        loss.backward()
        with torch.no_grad():
            w -= 0.1 * w.grad
            b -= 0.1 * b.grad
            if twin != "no_zero_grad":
                w.grad = None
                b.grad = None
    print(w.item(), b.item())


if __name__ == "__main__":
    main()
