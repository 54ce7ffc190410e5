# A small CNN in the style of pytorch/examples mnist: Conv2d, ReLU, max_pool2d, flatten,
# Linear, F.cross_entropy; SGD with momentum on random 8x8 "images".
import torch
import torch.nn as nn
import torch.nn.functional as F

from _twin import bend

STEPS = 2
CONV = {"model.conv1.weight", "model.conv1.bias"}
TWINS = {"off_2x": ("model.conv1.weight", CONV), "sign_flip": ("model.conv1.bias", CONV),
         "no_zero_grad": ("model.fc1.weight", CONV | {"model.fc1.weight", "model.fc1.bias"}),
         "unused_param": ("model.conv2.weight", {"model.conv2.weight", "model.conv2.bias"})}


class Net(nn.Module):
    def __init__(self, twin=None):
        super().__init__()
        self.twin = twin
        self.conv1 = nn.Conv2d(1, 4, 3, 1)
        if twin == "unused_param":
            self.conv2 = nn.Conv2d(4, 8, 3, 1)  # unused by the twin
        self.fc1 = nn.Linear(4 * 3 * 3, 3)

    def forward(self, x):
        x = bend(self.conv1(x), self.twin)
        x = F.relu(x)
        x = F.max_pool2d(x, 2)
        x = torch.flatten(x, 1)
        return self.fc1(x)


def main(steps=STEPS, twin=None):
    torch.manual_seed(10)
    data = torch.randn(16, 1, 8, 8)
    target = torch.randint(0, 3, (16,))
    model = Net(twin)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.5)
    model.train()
    for batch_idx in range(steps):
        if twin != "no_zero_grad":
            optimizer.zero_grad()
        output = model(data)
        loss = F.cross_entropy(output, target)
        loss.backward()
        optimizer.step()
    print(loss.item())


if __name__ == "__main__":
    main()
