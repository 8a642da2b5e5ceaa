"""Plain torch training steps for recur's experiments, as a user would write them with
``torch.nn``: the same model shape, data, optimizer, clipping and batch as the experiment's
config, each step generating or reading its batch the same way. Used by
``benchmarks/train_speed.py``; nothing here imports recur.

Each ``*_step`` function builds the model and optimizer and returns ``step()``, which runs one
whole training step (batch, forward, backward, clipping, update) and returns the loss as a
Python float (as a training script that logs every step would; recur's loop reads the loss
only at log steps, so the float is taken here only every ``log_every`` steps).
"""

import numpy as np
import torch
from torch import nn

RNN_TYPES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def _recurrent(cell: str, input_size: int, hidden_size: int, num_layers: int = 1, **kwargs):
    if cell not in RNN_TYPES:
        raise ValueError(f"unknown cell {cell!r}; available: {', '.join(RNN_TYPES)}")
    return RNN_TYPES[cell](input_size, hidden_size, num_layers, batch_first=True, **kwargs)


def _optimizer(name: str, params, learning_rate: float):
    if name == "adam":
        return torch.optim.Adam(params, lr=learning_rate)
    if name == "sgd":
        return torch.optim.SGD(params, lr=learning_rate)
    raise ValueError(f"no torch reference for optimizer {name!r}")


class _Stepper:
    """The step every reference shares: zero_grad, loss, backward, clip, update."""

    def __init__(self, model, optimizer, clip_norm: float, log_every: int):
        self.model, self.optimizer = model, optimizer
        self.clip_norm, self.log_every, self.count = clip_norm, log_every, 0

    def __call__(self, loss_fn) -> float | None:
        self.optimizer.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        if self.clip_norm > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_norm)
        self.optimizer.step()
        self.count += 1
        return float(loss.detach()) if self.count % self.log_every == 0 else None


def adding_step(cell, hidden_size, length, batch_size, optim, clip_norm, log_every, seed=0):
    """The adding problem (recur.data.probes.adding_batch's layout): inputs ``[B, T, 2]``
    (values from U[0, 1], two markers, one in each half), target the sum of the marked
    values; recurrent layer, last output, a linear layer to 1, MSE."""
    torch.manual_seed(seed)
    rnn, head = _recurrent(cell, 2, hidden_size), nn.Linear(hidden_size, 1)
    model = nn.ModuleList([rnn, head])
    stepper = _Stepper(model, _optimizer(optim.name, model.parameters(), optim.learning_rate),
                       clip_norm, log_every)  # fmt: skip
    half = length // 2
    rows = torch.arange(batch_size)

    def loss_fn():
        values = torch.rand(batch_size, length)
        markers = torch.zeros(batch_size, length)
        markers[rows, torch.randint(0, half, (batch_size,))] = 1.0
        markers[rows, torch.randint(half, length, (batch_size,))] = 1.0
        targets = (values * markers).sum(1, keepdim=True)
        outputs, _ = rnn(torch.stack([values, markers], -1))
        return nn.functional.mse_loss(head(outputs[:, -1]), targets)

    return lambda: stepper(loss_fn)


def language_model_step(
    cell,
    stream_array,
    bptt,
    vocab_size,
    embed_size,
    hidden_size,
    num_layers,
    optim,
    clip_norm,
    log_every,
    sum_over_time,
    seed=0,
):
    """Truncated BPTT over ``stream_array [B, N]`` (recur.data.text.streams): embedding,
    stacked recurrent layers, a linear layer to the vocabulary; the state carried from one
    window to the next (detached), reset at each epoch's start; cross-entropy per token, times
    the window length with ``sum_over_time`` (Zaremba et al.)."""
    torch.manual_seed(seed)
    embed = nn.Embedding(vocab_size, embed_size)
    rnn = _recurrent(cell, embed_size, hidden_size, num_layers)
    head = nn.Linear(hidden_size, vocab_size)
    model = nn.ModuleList([embed, rnn, head])
    stepper = _Stepper(model, _optimizer(optim.name, model.parameters(), optim.learning_rate),
                       clip_norm, log_every)  # fmt: skip
    streams = torch.from_numpy(np.asarray(stream_array, np.int64))
    per_epoch = (streams.shape[1] - 1) // bptt
    carried = {"state": None, "index": 0}

    def detach(state):
        return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()

    def loss_fn():
        index = carried["index"] % per_epoch
        if index == 0:
            carried["state"] = None
        start = index * bptt
        inputs = streams[:, start : start + bptt]
        targets = streams[:, start + 1 : start + bptt + 1]
        outputs, state = rnn(embed(inputs), carried["state"])
        carried["state"], carried["index"] = detach(state), carried["index"] + 1
        logits = head(outputs)
        loss = nn.functional.cross_entropy(logits.reshape(-1, vocab_size), targets.reshape(-1))
        return loss * bptt if sum_over_time else loss

    return lambda: stepper(loss_fn)


def classifier_step(
    cell,
    batches,
    vocab_size,
    embed_size,
    hidden_size,
    dropout_rate,
    optim,
    clip_norm,
    log_every,
    seed=0,
    packed=True,
):
    """Sentiment classification over ``batches`` (``step -> {"tokens" [B, T], "lengths" [B],
    "labels" [B], "weights" [B]}``, the experiment's bucketed batches): embedding, dropout,
    the recurrent layer, the last valid step's state, dropout, a linear layer to 2 classes;
    padded rows (weight 0) left out. ``packed``: the layer runs over the packed sequences
    (``pack_padded_sequence``, torch's idiom for variable lengths); False: over the padded
    batch, the output at each row's last valid step taken as its state (the same loss: a
    one-directional layer's output at a step is its hidden state there)."""
    torch.manual_seed(seed)
    embed = nn.Embedding(vocab_size, embed_size)
    rnn = _recurrent(cell, embed_size, hidden_size)
    head = nn.Linear(hidden_size, 2)
    dropout = nn.Dropout(dropout_rate)
    model = nn.ModuleList([embed, rnn, head])
    model.train()
    stepper = _Stepper(model, _optimizer(optim.name, model.parameters(), optim.learning_rate),
                       clip_norm, log_every)  # fmt: skip
    counter = {"step": 0}

    def loss_fn():
        batch = batches(counter["step"])
        counter["step"] += 1
        keep = torch.from_numpy(batch["weights"] > 0)
        tokens = torch.from_numpy(np.asarray(batch["tokens"], np.int64))[keep]
        lengths = torch.from_numpy(np.asarray(batch["lengths"], np.int64))[keep]
        labels = torch.from_numpy(np.asarray(batch["labels"], np.int64))[keep]
        inputs = dropout(embed(tokens))
        if packed:
            sequences = nn.utils.rnn.pack_padded_sequence(
                inputs, lengths, batch_first=True, enforce_sorted=False
            )
            _, state = rnn(sequences)
            last = (state[0] if isinstance(state, tuple) else state)[-1]  # [B, H]
        else:
            outputs, _ = rnn(inputs)  # [B, T, H]
            last = outputs[torch.arange(len(lengths)), lengths - 1]
        return nn.functional.cross_entropy(head(dropout(last)), labels)

    return lambda: stepper(loss_fn)
