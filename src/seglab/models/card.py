"""The model card's Hugging Face metadata (YAML front matter), written by huggingface_hub's
``ModelCardData`` so a model folder uploaded to the Hub shows its task and measured
figures there. The card bodies live with their use (``defects.card``, ``cutout.card``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePath


def front_matter(name: str, tags: Sequence[str], dataset: str, dataset_type: str,
                 metrics: Sequence[tuple[str, str, float]]) -> list[str]:
    """Card lines ``---`` / YAML / ``---``; ``metrics`` are (type, name, value) triples."""
    from huggingface_hub import EvalResult, ModelCardData

    data = ModelCardData(
        library_name="seglab", pipeline_tag="image-segmentation", tags=list(tags),
        model_name=name, eval_results=[
            EvalResult(task_type="image-segmentation", dataset_type=dataset_type,
                       dataset_name=dataset, metric_type=kind, metric_name=label,
                       metric_value=round(float(value), 5))
            for kind, label, value in metrics])
    return ["---", data.to_yaml().strip(), "---", ""]


def data_label(path: object) -> str:
    """The training data as a card names it: the last two parts of the folder
    (``shared/data``, ``data/neu-seg``), never the absolute path of the machine the
    model was trained on, which means nothing to a reader and leaks local layout."""
    if not path or path == "n/a":
        return "n/a"
    return "/".join(PurePath(str(path)).parts[-2:])


def where_comment(folder_name: str) -> str:
    """The snippet's note on where its model comes from: nothing for a zoo name (it
    works from any folder), else that the name is this card's own folder."""
    from seglab.models import zoo

    return "" if zoo.is_zoo_name(folder_name) else "  # this card's folder: give its path"
