"""Sequential two-tower retrieval: a transformer over the viewer's recent events, and an item
tower that blends a learned ID embedding with the video's content.

Item tower: ID + creator + sound + mean of hashtags + duration bucket + mean of caption words.
A video nobody has watched yet still gets a vector from its content (its ID reads the table's
shared "unknown" row until it is admitted).

User tower: each history token is the item's vector + what the viewer did with it (watch-ratio
bucket and like / share / comment / follow / negative flags) + the time-gap bucket since the
previous event + its position; a causal transformer encodes the sequence and the output at each
position is the user's vector after that event. Training predicts the next positive item from
every position at once; serving takes the last position.

Pure modules: no I/O, no device moves. Turning raw catalog items and events into the index
tensors below is done by ``encode_items`` / ``encode_history`` (plain functions of the vocab).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from reelrank.models.embeddings import DynamicEmbedding
from reelrank.models.vocabulary import PAD_ROW
from reelrank.types import Item

N_DURATION_BUCKETS = 16
N_GAP_BUCKETS = 24
N_VIEW_BUCKETS = 6  # none, skip (<10%), <50%, <100%, complete, rewatch
FLAGS = ("like", "share", "comment", "follow", "negative")
MAX_TAGS = 8
MAX_WORDS = 8
_WORD = re.compile(r"[a-z0-9\u00c0-\uffff]+")


def duration_bucket(duration_ms: int) -> int:
    """Log-spaced buckets of the video length: half-octaves of seconds."""
    seconds = max(0.0, duration_ms / 1000.0)
    return min(N_DURATION_BUCKETS - 1, int(2 * math.log2(seconds + 1)))


def gap_bucket(gap_ms: int) -> int:
    """Log-spaced buckets of the time since the previous event (octaves of seconds)."""
    seconds = max(0.0, gap_ms / 1000.0)
    return min(N_GAP_BUCKETS - 1, int(math.log2(seconds + 1)))


def view_bucket(event_type: str, watch_ratio: float | None) -> int:
    if event_type == "rewatch":
        return 5
    if watch_ratio is None:
        return 0
    if watch_ratio < 0.1:
        return 1
    if watch_ratio < 0.5:
        return 2
    if watch_ratio < 1.0:
        return 3
    return 4


@dataclass
class ItemInputs:
    """Index tensors describing N items for ``ItemTower``; padding is ``PAD_ROW``."""

    item: torch.Tensor  # (N,) rows of the item-id table
    creator: torch.Tensor  # (N,)
    sound: torch.Tensor  # (N,)
    tags: torch.Tensor  # (N, MAX_TAGS)
    duration: torch.Tensor  # (N,) duration bucket
    words: torch.Tensor  # (N, MAX_WORDS)

    def __getitem__(self, idx: torch.Tensor) -> "ItemInputs":
        return ItemInputs(self.item[idx], self.creator[idx], self.sound[idx], self.tags[idx],
                          self.duration[idx], self.words[idx])

    def __len__(self) -> int:
        return len(self.item)


def caption_words(caption: str) -> list[str]:
    return _WORD.findall(caption.lower())[:MAX_WORDS]


class ItemTower(nn.Module):
    def __init__(self, dim: int = 64, *, min_count: int = 1, use_content: bool = True,
                 content_fields: Sequence[str] = ("creator", "sound", "tags", "duration", "words"),
                 use_id: bool = True):
        super().__init__()
        self.dim = dim
        self.use = set(content_fields) if use_content else set()
        self.use_id = use_id
        self.item = DynamicEmbedding(dim, min_count=min_count)
        self.creator = DynamicEmbedding(dim, min_count=min_count)
        self.sound = DynamicEmbedding(dim, min_count=min_count)
        self.tag = DynamicEmbedding(dim, min_count=min_count)
        self.word = DynamicEmbedding(dim, min_count=min_count)
        self.duration = nn.Embedding(N_DURATION_BUCKETS, dim)
        nn.init.normal_(self.duration.weight, std=0.02)

    def observe(self, items: Sequence[Item], now: float = 0.0) -> None:
        """Count the ids of these items (training only); admitted ids get their own rows."""
        self.item.observe([it.item_id for it in items], now)
        if "creator" in self.use:
            self.creator.observe([it.creator_id for it in items], now)
        if "sound" in self.use:
            self.sound.observe([it.sound_id for it in items if it.sound_id], now)
        if "tags" in self.use:
            self.tag.observe([t for it in items for t in it.hashtags[:MAX_TAGS]], now)
        if "words" in self.use:
            self.word.observe([w for it in items for w in caption_words(it.caption)], now)

    def encode_items(self, items: Sequence[Item]) -> ItemInputs:
        """Raw items -> index tensors (lookups only; nothing is admitted)."""
        def padded(table: DynamicEmbedding, lists: list[list[str]], width: int) -> torch.Tensor:
            flat = [x for lst in lists for x in (lst[:width] + [None] * (width - len(lst[:width])))]
            return table.lookup_rows(flat).view(len(lists), width)

        return ItemInputs(
            item=self.item.lookup_rows([it.item_id for it in items]),
            creator=self.creator.lookup_rows([it.creator_id for it in items]),
            sound=self.sound.lookup_rows([it.sound_id for it in items]),
            tags=padded(self.tag, [list(it.hashtags) for it in items], MAX_TAGS),
            duration=torch.tensor([duration_bucket(it.duration_ms) for it in items],
                                  dtype=torch.long),
            words=padded(self.word, [caption_words(it.caption) for it in items], MAX_WORDS),
        )

    def forward(self, x: ItemInputs) -> torch.Tensor:
        v = self.item(x.item)  # (N, D)
        if not self.use_id:
            v = torch.zeros_like(v)
        if "creator" in self.use:
            v = v + self.creator(x.creator)
        if "sound" in self.use:
            v = v + self.sound(x.sound)
        if "tags" in self.use:
            v = v + _bag_mean(self.tag(x.tags), x.tags)  # (N, T, D) -> (N, D)
        if "duration" in self.use:
            v = v + self.duration(x.duration)
        if "words" in self.use:
            v = v + _bag_mean(self.word(x.words), x.words)
        return v  # (N, D)


def _bag_mean(vectors: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Mean over the non-padding entries: (N, T, D), (N, T) -> (N, D)."""
    mask = (rows != PAD_ROW).unsqueeze(-1).to(vectors.dtype)  # (N, T, 1)
    return (vectors * mask).sum(1) / mask.sum(1).clamp(min=1.0)


@dataclass
class HistoryInputs:
    """A batch of left-padded event histories; ``items`` indexes the caller's item vectors."""

    items: torch.Tensor  # (B, L) long: index into the item-vector matrix, -1 = padding
    view: torch.Tensor  # (B, L) long: view bucket
    flags: torch.Tensor  # (B, L, len(FLAGS)) float
    gap: torch.Tensor  # (B, L) long: gap bucket


class UserTower(nn.Module):
    def __init__(self, dim: int = 64, max_len: int = 50, layers: int = 2, heads: int = 2,
                 dropout: float = 0.2):
        super().__init__()
        self.dim = dim
        self.max_len = max_len
        self.position = nn.Embedding(max_len, dim)
        self.view = nn.Embedding(N_VIEW_BUCKETS, dim)
        self.flags = nn.Linear(len(FLAGS), dim, bias=False)
        self.gap = nn.Embedding(N_GAP_BUCKETS, dim)
        for emb in (self.position, self.view, self.gap):
            nn.init.normal_(emb.weight, std=0.02)
        nn.init.normal_(self.flags.weight, std=0.02)
        self.dropout = nn.Dropout(dropout)
        self.norm_in = nn.LayerNorm(dim)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=dim * 2, dropout=dropout,
                                           batch_first=True, norm_first=True, activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm_out = nn.LayerNorm(dim)

    def forward(self, h: HistoryInputs, item_vectors: torch.Tensor) -> torch.Tensor:
        """(B, L) histories and (I, D) item vectors -> (B, L, D): the user after each event."""
        B, L = h.items.shape
        pad = h.items < 0  # (B, L)
        tok = item_vectors[h.items.clamp(min=0)]  # (B, L, D)
        tok = tok + self.view(h.view) + self.flags(h.flags) + self.gap(h.gap)
        # Positions count back from the newest event, so a token's position does not depend on
        # how much padding the batch needed.
        back = torch.arange(L - 1, -1, -1, device=tok.device).clamp(max=self.max_len - 1)
        tok = tok + self.position(back)[None, :, :]  # (B, L, D)
        tok = tok.masked_fill(pad.unsqueeze(-1), 0.0)
        x = self.dropout(self.norm_in(tok))
        causal = torch.triu(torch.ones(L, L, dtype=torch.bool, device=x.device), diagonal=1)
        # Left padding: every row has its last position real, so no row is fully masked for the
        # positions that matter; fully padded prefixes are harmless and ignored by the loss.
        x = self.encoder(x, mask=causal, src_key_padding_mask=pad & ~_last_real(pad))
        return self.norm_out(x)  # (B, L, D)


def _last_real(pad: torch.Tensor) -> torch.Tensor:
    """A mask with the first position of each row unmasked, so attention never sees a row with
    every key masked (which would give NaNs) at the padded prefix."""
    first = torch.zeros_like(pad)
    first[:, 0] = True
    return first


class TwoTower(nn.Module):
    """The retrieval model: score(user, item) = <user vector, item vector>.

    With ``temperature`` the two vectors are unit length scaled by 1 / sqrt(temperature), so
    the score is their cosine / temperature: a vector's length no longer carries how often its
    video was watched (the served score adds popularity as its own prior), and the temperature
    sets how sharp the softmax over the catalog is. None: the plain inner product."""

    def __init__(self, dim: int = 64, max_len: int = 50, layers: int = 2, heads: int = 2,
                 dropout: float = 0.2, min_count: int = 1, use_content: bool = True,
                 content_fields: Sequence[str] = ("creator", "sound", "tags", "duration", "words"),
                 temperature: float | None = None):
        super().__init__()
        if temperature is not None and temperature <= 0:
            raise ValueError("temperature must be > 0")
        self.items = ItemTower(dim, min_count=min_count, use_content=use_content,
                               content_fields=content_fields)
        self.users = UserTower(dim, max_len, layers, heads, dropout)
        self.temperature = temperature

    def scaled(self, v: torch.Tensor) -> torch.Tensor:
        """A tower's output as the score reads it (see ``temperature``)."""
        if self.temperature is None:
            return v
        return F.normalize(v, dim=-1) * self.temperature ** -0.5

    def item_vectors(self, x: ItemInputs) -> torch.Tensor:
        return self.scaled(self.items(x))  # (N, D)

    def user_vectors(self, h: HistoryInputs, item_vectors: torch.Tensor) -> torch.Tensor:
        """The user's vector after the last event of each history: (B, D)."""
        return self.scaled(self.users(h, item_vectors)[:, -1, :])


_NO_FLAGS = [0.0] * len(FLAGS)


def encode_histories(histories: Sequence[Sequence], item_index: dict[str, int], max_len: int,
                     now: Sequence[int] | None = None) -> HistoryInputs:
    """Token lists (``reelrank.types.Token``, oldest first) -> left-padded ``HistoryInputs``
    over their last ``max_len`` tokens. Tokens of items missing from ``item_index`` are dropped.
    ``now`` (per history) adds nothing yet: gaps are between consecutive events."""
    B = len(histories)
    # Built as Python lists and turned into tensors once: element-wise tensor writes cost
    # microseconds each, and serving encodes a history on every request.
    items = [[-1] * max_len for _ in range(B)]
    view = [[0] * max_len for _ in range(B)]
    flags = [[_NO_FLAGS] * max_len for _ in range(B)]
    gap = [[0] * max_len for _ in range(B)]
    for b, hist in enumerate(histories):
        toks = [t for t in hist if t.item_id in item_index][-max_len:]
        offset = max_len - len(toks)
        prev_ts = None
        for j, t in enumerate(toks):
            p = offset + j
            items[b][p] = item_index[t.item_id]
            view[b][p] = view_bucket("play" if t.event_type == "long_view" else t.event_type,
                                     t.watch_ratio)
            flags[b][p] = [float(getattr(t, f)) for f in FLAGS]
            gap[b][p] = gap_bucket(t.ts - prev_ts) if prev_ts is not None else 0
            prev_ts = t.ts
    items = torch.tensor(items, dtype=torch.long).view(B, max_len)
    view = torch.tensor(view, dtype=torch.long).view(B, max_len)
    flags = torch.tensor(flags, dtype=torch.float32).view(B, max_len, len(FLAGS))
    gap = torch.tensor(gap, dtype=torch.long).view(B, max_len)
    return HistoryInputs(items, view, flags, gap)
