# d2l 3.2 "linear regression from scratch": synthetic data, a data iterator, linreg,
# squared_loss summed over the minibatch and sgd dividing by the batch size.
import torch

from _twin import bend

STEPS = 3
TWINS = {"off_2x": ("w", {"w", "b"}), "no_zero_grad": ("w", {"w", "b"})}


def synthetic_data(w, b, num_examples, gen):
    X = torch.normal(0, 1, (num_examples, len(w)), generator=gen)
    y = torch.matmul(X, w) + b
    y += torch.normal(0, 0.01, y.shape, generator=gen)
    return X, y.reshape((-1, 1))


def data_iter(batch_size, features, labels, gen):
    num_examples = len(features)
    indices = torch.randperm(num_examples, generator=gen)
    for i in range(0, num_examples, batch_size):
        batch_indices = indices[i: min(i + batch_size, num_examples)]
        yield features[batch_indices], labels[batch_indices]


def linreg(X, w, b):
    return torch.matmul(X, w) + b


def squared_loss(y_hat, y):
    return (y_hat - y.reshape(y_hat.shape)) ** 2 / 2


def sgd(params, lr, batch_size, zero=True):
    with torch.no_grad():
        for param in params:
            param -= lr * param.grad / batch_size
            if zero:
                param.grad.zero_()


def main(steps=STEPS, twin=None):
    gen = torch.Generator().manual_seed(0)
    true_w = torch.tensor([2, -3.4])
    true_b = 4.2
    features, labels = synthetic_data(true_w, true_b, 100, gen)
    w = torch.normal(0, 0.01, size=(2, 1), requires_grad=True, generator=gen)
    b = torch.zeros(1, requires_grad=True)
    lr, batch_size = 0.03, 10
    for step, (X, y) in enumerate(data_iter(batch_size, features, labels, gen)):
        if step == steps:
            break
        l = squared_loss(bend(linreg(X, w, b), twin), y)
        l.sum().backward()
        sgd([w, b], lr, batch_size, zero=twin != "no_zero_grad")
    print(w.flatten().tolist(), b.item())


if __name__ == "__main__":
    main()
