# Fine-tuning with nn.BatchNorm2d in eval mode (running statistics, as after pretraining):
# a conv, batch norm, ReLU, global average pooling and a linear head.
import torch
import torch.nn.functional as F
from torch import nn

from _twin import bend

STEPS = 2
CONV = {"conv.weight", "conv.bias"}
TWINS = {"off_2x": ("conv.weight", CONV), "sign_flip": ("conv.weight", CONV)}


def main(steps=STEPS, twin=None):
    torch.manual_seed(13)
    images = torch.randn(8, 2, 6, 6)
    labels = torch.randint(0, 2, (8,))
    conv = nn.Conv2d(2, 4, 3, padding=1)
    bn = nn.BatchNorm2d(4)
    head = nn.Linear(4, 2)
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    bn.eval()
    opt = torch.optim.SGD([*conv.parameters(), *bn.parameters(), *head.parameters()], lr=0.1)
    for step in range(steps):
        opt.zero_grad()
        feats = F.relu(bn(bend(conv(images), twin))).mean((2, 3))
        loss = F.cross_entropy(head(feats), labels)
        loss.backward()
        opt.step()
    print(loss.item())


if __name__ == "__main__":
    main()
