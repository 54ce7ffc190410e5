# Mixed precision on the CPU: the forward under torch.autocast("cpu", torch.bfloat16), the
# loss in float32, Adam on float32 parameters.
import torch
import torch.nn.functional as F
from torch import nn

from _twin import bend

STEPS = 2
FC1 = {"model.fc1.weight", "model.fc1.bias"}
TWINS = {"off_2x": ("model.fc1.weight", FC1), "sign_flip": ("model.fc1.bias", FC1),
         "no_zero_grad": ("model.fc2.weight", FC1 | {"model.fc2.weight", "model.fc2.bias"})}


class Model(nn.Module):
    def __init__(self, twin=None):
        super().__init__()
        self.twin = twin
        self.fc1 = nn.Linear(5, 16)
        self.fc2 = nn.Linear(16, 2)

    def forward(self, x):
        return self.fc2(bend(torch.tanh(self.fc1(x)), self.twin))


def main(steps=STEPS, twin=None):
    torch.manual_seed(8)
    X = torch.randn(64, 5)
    Y = torch.randn(64, 2)
    model = Model(twin)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(steps):
        if twin != "no_zero_grad":
            optimizer.zero_grad()
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            out = model(X)
        loss = F.mse_loss(out.float(), Y)
        loss.backward()
        optimizer.step()
    print(loss.item())


if __name__ == "__main__":
    main()
