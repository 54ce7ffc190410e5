# d2l 4.4 "softmax regression from scratch": W ~ N(0, 0.01), softmax and cross-entropy by
# hand (y_hat[range(len(y_hat)), y]), a minibatch sgd.
import torch

from _twin import bend

STEPS = 3
TWINS = {"off_2x": ("W", {"W", "b"}), "no_zero_grad": ("b", {"W", "b"})}


def softmax(X):
    X_exp = torch.exp(X)
    partition = X_exp.sum(1, keepdim=True)
    return X_exp / partition


def cross_entropy(y_hat, y):
    return -torch.log(y_hat[list(range(len(y_hat))), y])


def main(steps=STEPS, twin=None):
    gen = torch.Generator().manual_seed(5)
    num_inputs, num_outputs = 20, 4
    X_all = torch.randn(96, num_inputs, generator=gen)
    y_all = (X_all[:, :num_outputs] * 2).argmax(1)
    W = torch.normal(0, 0.01, size=(num_inputs, num_outputs), requires_grad=True, generator=gen)
    b = torch.zeros(num_outputs, requires_grad=True)
    for i in range(steps):
        X, y = X_all[i * 32:(i + 1) * 32], y_all[i * 32:(i + 1) * 32]
        y_hat = softmax(bend(torch.matmul(X.reshape((-1, W.shape[0])), W) + b, twin))
        l = cross_entropy(y_hat, y)
        l.mean().backward()
        with torch.no_grad():
            for param in (W, b):
                param -= 0.1 * param.grad
                if twin != "no_zero_grad":
                    param.grad.zero_()
    print(l.mean().item())


if __name__ == "__main__":
    main()
