"""Caption tokenizer and word vocabulary, storable in a checkpoint so decoding never depends on the data at hand."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)

# A word is a run of letters/digits, optionally joined by apostrophes inside it ("dog's", "don't").
# Every other character (punctuation, hyphens, quotes, a leading/trailing apostrophe) separates words,
# so "t-shirt" -> "t", "shirt" and "black-and-white" -> "black", "and", "white".
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def tokenize(text: str) -> list[str]:
    """Lower-cased words; punctuation acts as a separator, apostrophes inside a word are kept (see _WORD)."""
    return _WORD.findall(text.lower().replace("\u2019", "'"))


class Vocabulary:
    """Word <-> id map with fixed specials <pad>=0, <bos>=1, <eos>=2, <unk>=3."""

    pad_id = 0
    bos_id = 1
    eos_id = 2
    unk_id = 3

    def __init__(self, itos: Sequence[str], min_freq: int = 1) -> None:
        itos = list(itos)
        if tuple(itos[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"vocabulary must start with the specials {list(SPECIALS)}, got {itos[:4]}")
        if not all(isinstance(w, str) and w for w in itos):
            raise ValueError("vocabulary entries must be non-empty strings")
        stoi = {w: i for i, w in enumerate(itos)}
        if len(stoi) != len(itos):
            dupes = sorted(w for w, n in Counter(itos).items() if n > 1)
            raise ValueError(f"vocabulary has duplicate entries: {dupes[:10]}")
        if not isinstance(min_freq, int) or min_freq < 1:
            raise ValueError(f"min_freq must be an integer >= 1, got {min_freq!r}")
        self.itos: list[str] = itos
        self.stoi: dict[str, int] = stoi
        self.min_freq = min_freq

    @classmethod
    def build(cls, captions: Iterable[str], min_freq: int = 3) -> Vocabulary:
        """Words seen at least min_freq times, most frequent first, ties alphabetical, so builds are reproducible."""
        if not isinstance(min_freq, int) or min_freq < 1:
            raise ValueError(f"min_freq must be an integer >= 1, got {min_freq!r}")
        counts = Counter(tok for caption in captions for tok in tokenize(caption))
        words = sorted((w for w, n in counts.items() if n >= min_freq), key=lambda w: (-counts[w], w))
        return cls([*SPECIALS, *words], min_freq)

    def __len__(self) -> int:
        return len(self.itos)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return self.itos == other.itos and self.min_freq == other.min_freq

    def __repr__(self) -> str:
        return f"Vocabulary(size={len(self)}, min_freq={self.min_freq})"

    def encode(self, text: str, max_len: int | None = None) -> list[int]:
        """<bos> words <eos>; words are cut (never <eos>) so the whole sequence has at most max_len ids."""
        ids = [self.stoi.get(tok, self.unk_id) for tok in tokenize(text)]
        if max_len is not None:
            if max_len < 2:
                raise ValueError(f"max_len must be at least 2 (room for <bos> and <eos>), got {max_len}")
            ids = ids[: max_len - 2]
        return [self.bos_id, *ids, self.eos_id]

    def decode(self, ids: Iterable[int], strip_specials: bool = True) -> str:
        """Words up to the first <eos>; strip_specials drops <pad>/<bos>/<eos> but keeps <unk> (a word was there)."""
        words: list[str] = []
        for raw in ids:
            i = int(raw)
            if not 0 <= i < len(self.itos):
                raise ValueError(f"token id {i} is outside the vocabulary (size {len(self.itos)})")
            if i == self.eos_id:
                if not strip_specials:
                    words.append(EOS)
                break
            if strip_specials and i in (self.pad_id, self.bos_id):
                continue
            words.append(self.itos[i])
        return " ".join(words)

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable contents, e.g. for LightningModule.on_save_checkpoint."""
        return {"itos": list(self.itos), "min_freq": self.min_freq}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> Vocabulary:
        """Inverse of state_dict; the ids come back exactly as they were."""
        if not isinstance(state, Mapping) or "itos" not in state:
            raise ValueError(
                f"vocabulary state must be a mapping with 'itos' (and 'min_freq'), got {type(state).__name__}"
            )
        return cls(state["itos"], int(state.get("min_freq", 1)))
