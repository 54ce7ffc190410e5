# A Module/Trainer pair in the style of d2l 1.0: the model owns its loss and
# optimiser, the trainer owns the loop, and plot() moves the loss to the CPU.
import torch
from torch import nn

from _save import save_params


class Module(nn.Module):
    def __init__(self):
        super().__init__()
        self.history = []

    def plot(self, key, value):
        self.history.append((key, value.to(torch.device("cpu")).item()))

    def training_step(self, batch):
        loss = self.loss(self(*batch[:-1]), batch[-1])
        self.plot("loss", loss)
        return loss


class LinearRegressionScratch(Module):
    def __init__(self, num_inputs, lr, sigma=0.01):
        super().__init__()
        self.lr = lr
        self.w = torch.normal(0, sigma, (num_inputs, 1), requires_grad=True)
        self.b = torch.zeros(1, requires_grad=True)

    def forward(self, X):
        return torch.matmul(X, self.w) + self.b

    def loss(self, y_hat, y):
        return ((y_hat - y) ** 2 / 2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD([self.w, self.b], self.lr)


class LinearRegression(Module):
    def __init__(self, lr):
        super().__init__()
        self.lr = lr
        self.net = nn.LazyLinear(1)
        self.net.weight.data.normal_(0, 0.01)
        self.net.bias.data.fill_(0)

    def forward(self, X):
        return self.net(X)

    def loss(self, y_hat, y):
        return nn.MSELoss()(y_hat, y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), self.lr)


class Trainer:
    def __init__(self, max_epochs):
        self.max_epochs = max_epochs

    def fit(self, model, batches):
        optim = model.configure_optimizers()
        for epoch in range(self.max_epochs):
            for batch in batches:
                loss = model.training_step(batch)
                optim.zero_grad()
                with torch.no_grad():
                    loss.backward()
                optim.step()


torch.manual_seed(5)
X = torch.randn(100, 2)
y = X @ torch.tensor([[2.0], [-3.4]]) + 4.2
batches = [(X[i:i + 10], y[i:i + 10]) for i in range(0, 100, 10)]

model = LinearRegressionScratch(2, lr=0.03)
Trainer(max_epochs=2).fit(model, batches)
print("scratch", [round(v, 4) for _, v in model.history[-2:]])

model2 = LinearRegression(lr=0.03)
Trainer(max_epochs=2).fit(model2, batches)
print("concise", [round(v, 4) for _, v in model2.history[-2:]])
save_params(w=model.w, b=model.b, **dict(model2.named_parameters()))
