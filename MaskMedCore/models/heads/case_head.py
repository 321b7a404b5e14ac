"""Case-level classification from the head's final queries (issue 12: lesions, boxes and case labels from
the same queries).

One learned *case token* cross-attends to the final stage's (decoder-normed) queries, goes through an
FFN, a LayerNorm (as Mask2Former's ``decoder_norm`` before its prediction heads), and one Linear per task
gives that task's logits.

Why a token reading the queries: MTMed3D (fanlimua/MTMed3D) grades gliomas with a separate branch, a
DenseNet121 run on the segmentation output, so the classifier learns its own features from scratch.
Here the queries already summarise the case — each one holds a structure's class, mask embedding and
box — so a single attention read over them classifies the case with a few thousand parameters and
lets the case loss shape the same queries the segmentation uses. Attention, rather than mean pooling,
lets the token weight the queries that matter for a task (e.g. the lesion queries for "lesion count")
and ignore the "no object" ones; the queries' positional embeddings are added to the keys so the token
can tell query slots apart.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from MaskMedCore.layers.transformer_layers import CrossAttentionLayer, FFNLayer


class CaseClassificationHead(nn.Module):
    """A learned token attending to the queries, then one linear classifier per case-level task.

    Args:
        dim: query width E.
        heads: attention heads (divides ``dim``).
        ffn_dim: FFN hidden width.
        task_classes: C_t, the number of classes of each task (>= 2 each, at least one task).
        dropout: dropout in the attention and FFN layers.

    Raises:
        ValueError: no task, or a task with fewer than 2 classes.
    """

    def __init__(self, dim: int, heads: int, ffn_dim: int, task_classes: Sequence[int], dropout: float = 0.0) -> None:
        super().__init__()
        task_classes = tuple(int(c) for c in task_classes)
        if not task_classes or min(task_classes) < 2:
            raise ValueError(f"task_classes must list at least one task with >= 2 classes, got {list(task_classes)}")
        self.task_classes = task_classes
        self.token = nn.Embedding(1, dim)
        self.cross = CrossAttentionLayer(dim, heads, dropout)
        self.ffn = FFNLayer(dim, ffn_dim, dropout)
        self.norm = nn.LayerNorm(dim)
        self.classifiers = nn.ModuleList(nn.Linear(dim, c) for c in task_classes)

    def forward(self, queries: Tensor, query_pos: Tensor | None = None) -> tuple[Tensor, ...]:
        """Case logits from the final queries.

        Args:
            queries: (B, Q, E) the final stage's decoder-normed queries.
            query_pos: (B or 1, Q, E) the queries' positional embeddings (added to the keys), or None.

        Returns:
            One (B, C_t) logits tensor per task, in ``task_classes`` order.
        """
        B = queries.shape[0]
        token = self.token.weight[None].expand(B, -1, -1)  # (1, E) -> (B, 1, E)
        token = self.cross(token, queries, memory_pos=query_pos)
        token = self.norm(self.ffn(token))[:, 0]  # (B, 1, E) -> (B, E)
        return tuple(classifier(token) for classifier in self.classifiers)
