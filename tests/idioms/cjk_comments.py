# 线性回归的从零开始实现 (linear regression from scratch, as in the course notes)
import torch

from _save import save_params

torch.manual_seed(8)
features = torch.randn(100, 2)
labels = features @ torch.tensor([[2.0], [-3.4]]) + 4.2  # 真实参数 w=[2, -3.4], b=4.2
w = torch.normal(0, 0.01, size=(2, 1), requires_grad=True)
b = torch.zeros(1, requires_grad=True)
lr = 0.03
for epoch in range(3):
    for i in range(0, 100, 10):
        X, y = features[i:i + 10], labels[i:i + 10]
        y_hat = torch.matmul(X, w) + b  # 线性模型
        l = (y_hat - y) ** 2 / 2  # 平方损失 $\argmin_w \sum_i l_i$
        l.sum().backward()  # 反向传播, 计算梯度
        with torch.no_grad():
            for param in (w, b):
                param -= lr * param.grad / 10  # 小批量随机梯度下降
                param.grad.zero_()
    print(f"epoch {epoch + 1}, loss {float(l.mean()):f}")
save_params(w=w, b=b)
