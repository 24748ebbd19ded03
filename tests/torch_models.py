"""The torch lane's five models (random weights made here, nothing downloaded) and their export to ONNX.

Used by tests/test_torch_models.py (compares gradserve with torch autograd) and scripts/export_models.py
(writes the structure-only graphs in tests/models/ that the main lane checks without torch).
"""

from __future__ import annotations

import io
import math

import torch
from torch import nn

OPSET = 17


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(20, 32), nn.Linear(32, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class LeNet(nn.Module):
    """LeNet-5's shape with BatchNorm after each convolution, max and average pooling."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.BatchNorm2d(16), nn.ReLU(), nn.AvgPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16 * 5 * 5, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)

    def forward(self, x, mask):
        batch, length, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=2)
        q, k, v = (t.reshape(batch, length, self.heads, width // self.heads).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(width // self.heads)
        scores = scores.masked_fill(mask, float("-inf"))
        out = torch.softmax(scores, dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(batch, length, width))


class GPT2Block(nn.Module):
    """A GPT-2-style model of one block: token and position embeddings, pre-LayerNorm causal attention and a
    GELU MLP with residuals, a final LayerNorm and the vocabulary head."""

    def __init__(self, vocab: int = 50, length: int = 8, width: int = 32, heads: int = 4):
        super().__init__()
        self.tokens, self.positions = nn.Embedding(vocab, width), nn.Embedding(length, width)
        self.ln1, self.ln2, self.ln_f = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(approximate="tanh"), nn.Linear(4 * width, width))
        self.head = nn.Linear(width, vocab)
        self.register_buffer("mask", torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1))

    def forward(self, ids):
        x = self.tokens(ids) + self.positions(torch.arange(ids.shape[1]))
        x = x + self.attn(self.ln1(x), self.mask[: ids.shape[1], : ids.shape[1]])
        x = x + self.mlp(self.ln2(x))
        return self.head(self.ln_f(x))


def resnet18():
    import torchvision

    return torchvision.models.resnet18(weights=None, num_classes=10)


class EncoderLayer(nn.Module):
    """nn.TransformerEncoderLayer with GELU; called with is_causal spelled out, which tracing needs (a traced
    default reaches scaled_dot_product_attention as a tensor)."""

    def __init__(self):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, dropout=0.0,
                                                activation="gelu", batch_first=True)

    def forward(self, x):
        return self.layer(x, src_mask=None, is_causal=False)


def cases():
    """name -> (model factory, example input factory, training-mode export?)."""
    return {
        "mlp": (MLP, lambda: torch.randn(4, 20, dtype=torch.float64), False),
        "lenet_bn": (LeNet, lambda: torch.randn(2, 1, 28, 28, dtype=torch.float64), False),
        "lenet_bn_training": (LeNet, lambda: torch.randn(4, 1, 28, 28, dtype=torch.float64), True),
        "resnet18": (resnet18, lambda: torch.randn(1, 3, 32, 32, dtype=torch.float64), False),
        "transformer_encoder": (EncoderLayer, lambda: torch.randn(2, 8, 32, dtype=torch.float64), False),
        "gpt2_block": (GPT2Block, lambda: torch.randint(0, 50, (2, 8)), False),
    }


def build(name: str, seed: int = 0):
    """The model (float64, random weights, none left constant; BatchNorm with running statistics) and its input."""
    make_model, make_input, training = cases()[name]
    torch.manual_seed(seed)
    model = make_model().double()
    with torch.no_grad():
        # Parameters left at a constant (LayerNorm's ones and zeros, attention's zero biases) are drawn at random:
        # the exporter merges equal initializers into one name, and gradients are better checked off that point.
        for param in model.parameters():
            if param.numel() > 1 and bool((param == param.flatten()[0]).all()):
                param.uniform_(0.5, 1.5) if float(param.flatten()[0]) == 1.0 else param.uniform_(-0.5, 0.5)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.5, 0.5)
    model.train(training)
    return model, make_input(), training


def export(model, example, training: bool) -> bytes:
    """The model as ONNX bytes: parameters keep their torch names (no constant folding renames them)."""
    buffer = io.BytesIO()
    mode = torch.onnx.TrainingMode.TRAINING if training else torch.onnx.TrainingMode.EVAL
    torch.onnx.export(model, (example,), buffer, opset_version=OPSET, input_names=["x"], output_names=["y"],
                      do_constant_folding=False, training=mode, dynamo=False)
    return buffer.getvalue()
