"""The shipped model's card (``MODEL_CARD.md``), rendered from its ``card.json``."""

from __future__ import annotations

from typing import Any

from ferstudy.analysis.stats import PairedDifference


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def _difference(d: dict[str, Any]) -> str:
    return PairedDifference.from_dict(d).describe()


def _split_text(split: dict[str, Any]) -> str:
    if split["kind"] == "usage":
        return (
            "split by its `Usage` column: Training to fit, PublicTest to keep each seed's best "
            "epoch and to choose the model, PrivateTest to measure"
        )
    return (
        f"split stratified ({split['test_size']:.0%} test, {split['val_size']:.0%} validation, "
        f"random_state {split['random_state']}); only its PrivateTest images measure"
    )


def _start(recipe: dict[str, Any]) -> str:
    if recipe["init"] != "pretrained":
        return f"The network starts from random weights ({recipe['backbone']})."
    if recipe["backbone"] == "onet":
        return "The network starts from MTCNN's ONet weights (the `mtcnn` package, MIT licence)."
    return f"The network starts from {recipe['backbone']}'s pretrained weights (see their licence)."


def model_card(card: dict[str, Any]) -> str:
    """Markdown: what the model is, its data and recipe, scores with intervals, limits, terms."""
    s, recipe = card["scores"], card["recipe"]
    p = s["privatetest"]
    low, high = p["macro_f1_interval"]
    commit = card["commit"] or "unknown (exported outside git)"
    if card["modified"]:
        commit += " (with uncommitted changes to its code or configuration)"
    weakest = min(p["recall"], key=p["recall"].get)
    mirror = (
        "; each face is also read mirrored and the probabilities averaged" if card["flip"] else ""
    )
    augment = ", ".join(f"{k} {v}" for k, v in recipe["augmentation"].items())
    lines = [
        f"# Model card: {card['name']}",
        "",
        "Facial emotion recognition on one face crop: the 7 FER2013 emotions "
        f"({', '.join(card['classes'])}, in this output order).",
        "",
        "## Use",
        "",
        "```python",
        "import ferstudy",
        'faces = ferstudy.analyze("photo.jpg")  # one record per face: box, emotion, probabilities',
        "```",
        "",
        f"Input: {card['input']}. `ferstudy predict photo.jpg` does the same from the shell.",
        "",
        "## What it is",
        "",
        f"- Network: {recipe['backbone']} ({recipe['init']} weights), every layer fine-tuned at "
        f"{recipe['input_size']} px.",
        f"- Members: {', '.join(m['folder'] for m in card['members'])}" + mirror + ".",
        f"- Chosen on validation accuracy among {len(s['validation_accuracy'])} candidates "
        f"(each seed alone, all seeds averaged, each with and without flip test-time "
        f"augmentation) on {s['validation_images']:,} validation images; PrivateTest was not "
        f"used to choose. A seed's validation accuracy is that of its best epoch, which favours "
        f"single seeds in this choice.",
        f"- Exported at commit {commit}.",
        "",
        "## Training data and recipe",
        "",
        f"- FER2013 (Goodfellow et al., 2013), {_split_text(recipe['split'])}.",
        f"- Adam, lr {recipe['lr']} after {recipe['warmup_epochs']} warm-up epoch(s), cosine "
        f"decay over {recipe['epochs']} epochs, batch {recipe['batch_size']}, dropout "
        f"{recipe['dropout']}, early stopping after {recipe['patience']} epochs without a better "
        f"validation accuracy, class weights {recipe['class_weight']}.",
        f"- Augmentation on the fly: {augment}.",
        "",
        f"## Scores on FER2013's PrivateTest ({p['images']:,} images)",
        "",
        f"- Accuracy {_pct(p['accuracy'])} (95 % Wilson interval {_pct(p['low'])} to "
        f"{_pct(p['high'])}).",
        f"- Macro-F1 {p['macro_f1']:.3f} (95 % bootstrap interval {low:.3f} to {high:.3f}).",
        f"- Against the `fer` package's model on the same images: {_difference(s['minus_fer'])}; "
        f"fer scores {_pct(s['fer_privatetest']['accuracy'])} (its checkpoint was chosen on data "
        "that held PrivateTest, so that score is if anything optimistic).",
        f"- Against the single best-validation seed ({s['single_best']}, "
        f"{_pct(s['single_best_privatetest']['accuracy'])}):",
        *(f"  - {name}: {_difference(d)}" for name, d in s["minus_single_best"].items()),
        "",
        "| emotion | recall |",
        "|---|---:|",
        *(f"| {c} | {r:.3f} |" for c, r in p["recall"].items()),
        "",
        "## Known limits",
        "",
        "- FER2013's faces are small (48x48), grayscale and web-scraped; its labels are noisy "
        "(human accuracy on it is reported near 65 %). Expect lower accuracy on other faces, "
        "poses and lighting.",
        f"- {weakest.capitalize()} has the lowest recall here ({p['recall'][weakest]:.3f}); "
        "do not rely on it.",
        "- Emotions are read from a face's appearance only; the model says nothing about what a "
        "person feels. Do not use it for decisions about people.",
        "",
        "## Licence and data terms",
        "",
        f"- {_start(recipe)}",
        "- The weights were trained on FER2013, which is not redistributed here; the terms of "
        "the place it is obtained from (the ICML 2013 challenge data on Kaggle) apply to models "
        "trained on it. Check them before any commercial use.",
        "",
    ]
    return "\n".join(lines)
