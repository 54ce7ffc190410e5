# "Extending PyTorch": a LinearFunction with its own backward and the module that holds its
# parameters, two of them with square weights for a regression, trained by SGD with momentum.
import torch
from torch import nn

from _twin import factor

STEPS = 2
# A parameter that reaches the Function is named by its module path, not by the forward's
# argument that receives it.
W = {"net.fc1.weight", "net.fc2.weight"}
ALL = W | {"net.fc1.bias", "net.fc2.bias"}
TWINS = {"transposed": ("net.fc2.weight", W), "off_2x": ("net.fc2.weight", W),
         "sign_flip": ("net.fc2.weight", W), "no_zero_grad": ("net.fc2.weight", ALL),
         "unused_param": ("w_skip", {"w_skip"})}


class LinearFunction(torch.autograd.Function):
    twin = None

    @staticmethod
    def forward(ctx, input, weight, bias):
        ctx.save_for_backward(input, weight)
        return input.mm(weight.t()) + bias

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        twin = LinearFunction.twin
        grad_input = grad_output.mm(weight)
        grad_weight = grad_output.t().mm(input)
        if twin == "transposed":
            grad_weight = grad_weight.t()       # input.t().mm(grad_output): the shapes agree
        grad_weight = grad_weight * factor(twin)
        grad_bias = grad_output.sum(0)
        return grad_input, grad_weight, grad_bias


class Linear(nn.Module):
    """The docs' module around the Function: it holds the parameters."""

    def __init__(self, input_features, output_features):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(output_features, input_features) / input_features ** 0.5)
        self.bias = nn.Parameter(torch.zeros(output_features))

    def forward(self, input):
        return LinearFunction.apply(input, self.weight, self.bias)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = Linear(6, 6)
        self.fc2 = Linear(6, 6)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def main(steps=STEPS, twin=None):
    LinearFunction.twin = twin
    torch.manual_seed(0)
    X = torch.randn(40, 6)
    Y = torch.randn(40, 6)
    net = Net()
    params = list(net.parameters())
    if twin == "unused_param":
        w_skip = torch.zeros(6, 6, requires_grad=True)   # the twin's mistake: never used
        params.append(w_skip)
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    for epoch in range(steps):
        if twin != "no_zero_grad":
            opt.zero_grad()
        loss = ((net(X) - Y) ** 2).mean()
        loss.backward()
        opt.step()  # the twin's finding names this line
    print(loss.item())


if __name__ == "__main__":
    main()
