# A bag-of-words classifier: nn.Embedding, mean over the tokens, nn.Linear; Adagrad.
import torch
from torch import nn

from _twin import bend

STEPS = 2
EMB = {"model.embedding.weight"}
TWINS = {"off_2x": ("model.embedding.weight", EMB),
         "no_zero_grad": ("model.fc.weight", EMB | {"model.fc.weight", "model.fc.bias"}),
         "unused_param": ("model.pos.weight", {"model.pos.weight"})}


class TextClassifier(nn.Module):
    def __init__(self, vocab_size=30, embed_dim=6, num_class=3, twin=None):
        super().__init__()
        self.twin = twin
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        if twin == "unused_param":
            self.pos = nn.Embedding(8, embed_dim)  # unused by the twin
        self.fc = nn.Linear(embed_dim, num_class)

    def forward(self, text):
        return self.fc(bend(self.embedding(text), self.twin).mean(1))


def main(steps=STEPS, twin=None):
    torch.manual_seed(14)
    text = torch.randint(0, 30, (12, 8))
    label = torch.randint(0, 3, (12,))
    model = TextClassifier(twin=twin)
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.Adagrad(model.parameters(), lr=0.1)
    for idx in range(steps):
        if twin != "no_zero_grad":
            optimizer.zero_grad()
        loss = criterion(model(text), label)
        loss.backward()
        optimizer.step()
    print(loss.item())


if __name__ == "__main__":
    main()
