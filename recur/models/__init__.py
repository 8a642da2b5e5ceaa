"""Flax Linen models on top of the pure-function cells, one per problem shape.

* one-to-one: :class:`FeedForward` (a baseline of similar size)
* many-to-one: :class:`SequenceClassifier`
* many-to-many: :class:`SequenceTagger`, :class:`LanguageModel`
* one-to-many: :class:`SequenceGenerator`; on images, :class:`ImageCaptioner`
  (an :class:`ImageEncoder` starts the generator)
* encoder-decoder: :class:`Seq2Seq` (attention: none | bahdanau | luong_dot | luong_general)

:class:`OutputLayer` is the logits layer over a vocabulary (kernel stored ``[vocab, hidden]``).
"""

from recur.models.captioner import ImageCaptioner, ImageEncoder
from recur.models.classifier import FeedForward, SequenceClassifier, SequenceTagger
from recur.models.generator import SequenceGenerator
from recur.models.language_model import LanguageModel, OutputLayer
from recur.models.recurrent import Recurrent
from recur.models.seq2seq import Seq2Seq

__all__ = [
    "FeedForward",
    "ImageCaptioner",
    "ImageEncoder",
    "LanguageModel",
    "OutputLayer",
    "Recurrent",
    "Seq2Seq",
    "SequenceClassifier",
    "SequenceGenerator",
    "SequenceTagger",
]
