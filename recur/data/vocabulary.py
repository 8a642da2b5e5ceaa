"""A token <-> id table shared by the text pipelines; each pipeline builds its own."""

import dataclasses
import json
import pathlib

import numpy as np

from recur import files


@dataclasses.dataclass
class Vocabulary:
    """``tokens[i]`` has id i; tokens outside the table map to ``unknown``."""

    tokens: list[str]
    unknown: str = "<unk>"

    def __post_init__(self):
        self.ids = {token: i for i, token in enumerate(self.tokens)}
        if self.unknown not in self.ids:
            raise ValueError(f"vocabulary has no unknown token {self.unknown!r}")

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: list[str]) -> np.ndarray:
        unknown = self.ids[self.unknown]
        return np.array([self.ids.get(token, unknown) for token in tokens], np.int32)

    def decode(self, ids) -> list[str]:
        return [self.tokens[int(i)] for i in ids]

    def save(self, path: pathlib.Path) -> None:
        files.write_json(path, self.tokens, indent=None)

    @classmethod
    def load(cls, path: pathlib.Path):
        return cls(json.loads(path.read_text()))
