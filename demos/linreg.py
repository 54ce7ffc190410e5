"""Linear regression from scratch (d2l chapter 3): the loop gradtrace was made to show.

Synthetic data y = X w + b + noise with w = [2, -3.4], b = 4.2; minibatch SGD on the
summed squared loss, the gradient divided by the batch size inside the update, and the
gradients zeroed by hand because backward() accumulates.

    python demos/linreg.py            # plain
    gradtrace run demos/linreg.py     # recorded, checked and drawn
"""

import random

import torch

torch.manual_seed(42)
random.seed(42)


def synthetic_data(w, b, num_examples):
    """y = Xw + b + Gaussian noise."""
    X = torch.normal(0, 1, (num_examples, len(w)))
    y = torch.matmul(X, w) + b
    y += torch.normal(0, 0.01, y.shape)
    return X, y.reshape((-1, 1))


def data_iter(batch_size, features, labels):
    """Shuffle the examples and yield minibatches of `batch_size`."""
    num_examples = len(features)
    indices = list(range(num_examples))
    random.shuffle(indices)
    for i in range(0, num_examples, batch_size):
        batch_indices = torch.tensor(indices[i:min(i + batch_size, num_examples)])
        yield features[batch_indices], labels[batch_indices]


def linreg(X, w, b):
    """The linear model."""
    return torch.matmul(X, w) + b


def squared_loss(y_hat, y):
    """Squared loss per example (with the 1/2 that makes the derivative clean)."""
    return (y_hat - y.reshape(y_hat.shape)) ** 2 / 2


def sgd(params, lr, batch_size):
    """Minibatch stochastic gradient descent."""
    with torch.no_grad():
        for param in params:
            param -= lr * param.grad / batch_size
            param.grad.zero_()


true_w = torch.tensor([2, -3.4])
true_b = 4.2
features, labels = synthetic_data(true_w, true_b, 1000)

w = torch.normal(0, 0.01, size=(2, 1), requires_grad=True)
b = torch.zeros(1, requires_grad=True)

lr = 0.03
num_epochs = 3
batch_size = 10
net = linreg
loss = squared_loss

for epoch in range(num_epochs):
    for X, y in data_iter(batch_size, features, labels):
        l = loss(net(X, w, b), y)  # minibatch loss, one value per example
        l.sum().backward()         # the gradient of the *sum* over the batch
        sgd([w, b], lr, batch_size)
    with torch.no_grad():
        train_l = loss(net(features, w, b), labels)
        print(f'epoch {epoch + 1}, loss {float(train_l.mean()):f}')

print(f'error in estimating w: {true_w - w.reshape(true_w.shape)}')
print(f'error in estimating b: {true_b - b}')
