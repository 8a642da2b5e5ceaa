"""Generates text from a trained language model (the latest checkpoint in a workdir).

  python -m experiments.lm.sample --workdir=/tmp/shakespeare_lstm --prompt="ROMEO:" \
      --length=200 --temperature=0.8

The prompt is read through the model to set its state, then ``length`` tokens are drawn one at a
time from softmax(logits / temperature). Words outside the vocabulary become ``<unk>``.
"""

import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags

from experiments.lm import train
from recur.data import text
from recur.train import Task, quiet_logs
from recur.train.loop import restore_params

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Workdir of a language-model run (experiments.lm.main).")
flags.DEFINE_string("prompt", "", "Text to start from (empty: start of a line).")
flags.DEFINE_integer("length", 200, "Tokens to generate (words or characters).")
flags.DEFINE_float("temperature", 0.8, "Softmax temperature (> 0; lower is more conservative).")
flags.DEFINE_integer("seed", 0, "Random seed of the sampler.")
flags.mark_flags_as_required(["workdir"])


def prompt_tokens(prompt: str, level: str) -> list[str]:
    """The prompt as vocabulary tokens, starting after an end of line."""
    if level == "word":
        return [text.EOS, *prompt.split()]
    if level == "char_tokens":  # PTB's char files: symbols, "_" between words
        return [text.EOS, *("_" if c == " " else c for c in prompt)]
    return ["\n", *prompt]


def detokenize(tokens: list[str], level: str) -> str:
    if level == "word":
        words = ""
        for t in tokens:
            words += "\n" if t == text.EOS else (t if words.endswith("\n") else f" {t}")
        return words
    if level == "char_tokens":
        return "".join("\n" if t == text.EOS else " " if t == "_" else t for t in tokens)
    return "".join(tokens)


def generate(model, params, prompt_ids: np.ndarray, length: int, temperature: float, key):
    """Token ids drawn after reading ``prompt_ids`` (at least one id)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")

    @jax.jit
    def read(params, tokens, states):
        logits, states = model.apply({"params": params}, tokens, states)
        return logits[:, -1], states  # [1, V]

    @jax.jit
    def draw(params, logits, states, key):
        token = jax.random.categorical(key, logits / temperature)  # [1]
        logits, states = model.apply({"params": params}, token[:, None], states)
        return token, logits[:, -1], states

    logits, states = read(params, jnp.asarray(prompt_ids)[None], model.initial_states(1))
    drawn = []
    for step_key in jax.random.split(key, length):
        token, logits, states = draw(params, logits, states, step_key)
        drawn.append(int(token[0]))
    return np.array(drawn, np.int32)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    quiet_logs()
    workdir = pathlib.Path(FLAGS.workdir)
    try:
        if not (workdir / "config.json").exists() or not (workdir / train.VOCAB).exists():
            raise ValueError(f"{workdir} holds no language-model run (config.json, vocab.json)")
        config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
        vocab = text.Vocabulary.load(workdir / train.VOCAB)
        model = train.make_model(config, len(vocab))
        task = Task(
            model=model,
            init_params=train.init_params_fn(config, model),
            loss_fn=None,
            train_batch=None,
            eval_batches=None,
            metric="",
            initial_carry=model.initial_states(config.batch_size),
        )
        params = restore_params(config, workdir, task)
        level = config.data.level
        ids = vocab.encode(prompt_tokens(FLAGS.prompt, level))
        drawn = generate(
            model, params, ids, FLAGS.length, FLAGS.temperature, jax.random.key(FLAGS.seed)
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    print(FLAGS.prompt + detokenize(vocab.decode(drawn), level))


if __name__ == "__main__":
    app.run(main)
