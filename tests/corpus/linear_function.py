# "Extending PyTorch": a LinearFunction with its own backward, used for a two-layer
# regression with square weights, trained by SGD with momentum.
import torch

from _twin import factor

STEPS = 2
TWINS = {"transposed": ("w1", {"w1", "w2"}), "off_2x": ("w1", {"w1", "w2"}),
         "sign_flip": ("w2", {"w1", "w2"}), "no_zero_grad": ("w1", {"w1", "b1", "w2", "b2"}),
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


def main(steps=STEPS, twin=None):
    LinearFunction.twin = twin
    torch.manual_seed(0)
    X = torch.randn(40, 6)
    Y = torch.randn(40, 6)
    w1 = (torch.randn(6, 6) / 6 ** 0.5).requires_grad_()
    b1 = torch.zeros(6, requires_grad=True)
    w2 = (torch.randn(6, 6) / 6 ** 0.5).requires_grad_()
    b2 = torch.zeros(6, requires_grad=True)
    params = [w1, b1, w2, b2]
    if twin == "unused_param":
        w_skip = torch.zeros(6, 6, requires_grad=True)   # unused by the twin
        params.append(w_skip)
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    linear = LinearFunction.apply
    for epoch in range(steps):
        if twin != "no_zero_grad":
            opt.zero_grad()
        h = torch.relu(linear(X, w1, b1))
        loss = ((linear(h, w2, b2) - Y) ** 2).mean()
        loss.backward()
        opt.step()  # the twin's finding names this line
    print(loss.item())


if __name__ == "__main__":
    main()
