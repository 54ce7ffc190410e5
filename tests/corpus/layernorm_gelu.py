# A transformer-style feed-forward block: Linear, nn.LayerNorm, GELU, Linear, with a
# residual connection; AdamW.
import torch
from torch import nn

from _twin import bend

STEPS = 2
INNER = {"block.up.weight", "block.up.bias", "block.norm.weight", "block.norm.bias"}
TWINS = {"off_2pct": ("block.up.weight", INNER - {"block.norm.weight", "block.norm.bias"}),
         "no_zero_grad": ("block.norm.weight", INNER | {"block.down.weight", "block.down.bias"}),
         "unused_param": ("block.extra.weight", {"block.extra.weight", "block.extra.bias"})}


class Block(nn.Module):
    def __init__(self, d=6, twin=None):
        super().__init__()
        self.twin = twin
        self.up = nn.Linear(d, 4 * d)
        self.norm = nn.LayerNorm(4 * d)
        self.down = nn.Linear(4 * d, d)
        if twin == "unused_param":
            self.extra = nn.Linear(d, d)  # unused by the twin

    def forward(self, x):
        return x + self.down(nn.functional.gelu(self.norm(bend(self.up(x), self.twin))))


def main(steps=STEPS, twin=None):
    torch.manual_seed(11)
    x = torch.randn(20, 6)
    target = torch.randn(20, 6)
    block = Block(twin=twin)
    opt = torch.optim.AdamW(block.parameters(), lr=1e-3, weight_decay=0.01)
    for step in range(steps):
        if twin != "no_zero_grad":
            opt.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(block(x), target)
        loss.backward()
        opt.step()
    print(loss.item())


if __name__ == "__main__":
    main()
