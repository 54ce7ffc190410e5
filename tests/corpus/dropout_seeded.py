# d2l 5.6 dropout: nn.Dropout between layers in training mode, torch.manual_seed fixed.
# A replay cannot redraw the masks, so the numeric check says so (and names model.eval());
# findings still apply.
import torch
from torch import nn

STEPS = 2
ALL = {"net.0.weight", "net.0.bias", "net.3.weight", "net.3.bias"}
TWINS = {"no_zero_grad": ("net.0.weight", ALL)}
NUMERIC = "model.eval()"   # why the numeric check does not apply, in its words


def main(steps=STEPS, twin=None):
    torch.manual_seed(15)
    X = torch.randn(32, 6)
    y = torch.randint(0, 2, (32,))
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 2))
    loss = nn.CrossEntropyLoss()
    trainer = torch.optim.SGD(net.parameters(), lr=0.1)
    net.train()
    for epoch in range(steps):
        l = loss(net(X), y)
        if twin != "no_zero_grad":
            trainer.zero_grad()
        l.backward()
        trainer.step()
    print(l.item())


if __name__ == "__main__":
    main()
