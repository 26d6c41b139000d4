"""From LOSO predictions to the reports people read: metrics, ablation, model card, run summary.

Every figure is computed on the concatenated held-out predictions of all folds (as
MEGC does), once per seed; the reports give the mean and the standard deviation over
seeds. The 'oracle best epoch' figure — each fold's best epoch chosen on its own test
subject, as much published MER code does — is reported beside it, labelled, and never
as the result.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import get_args

from mer_core.config import BaselineVariant, learned_variant
from mer_core.data.action_units import au_names, au_targets, unit_names
from mer_core.data.labels import composite_label
from mer_core.evaluation.ceiling import ORACLE_VARIANT
from mer_core.evaluation.metrics import mean_au_f1, per_au_f1, per_class_scores, summarize

PROTOCOL = "leave-one-subject-out; last epoch of every fold; no choice made on the held-out subject"
LODO_PROTOCOL = "leave-one-data-set-out; last epoch of every fold; no choice made on the held-out data set"


def _by_seed(rows: list[dict], variant: str) -> dict[int, list[dict]]:
    seeds: dict[int, list[dict]] = {}
    for row in rows:
        if row["variant"] == variant:
            seeds.setdefault(row["seed"], []).append(row)
    return seeds


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def _over_seeds(per_seed: list[dict[str, float]]) -> dict:
    out: dict = {"seeds": len(per_seed)}
    for key in ("uf1", "uar", "accuracy"):
        mean, std = _mean_std([s[key] for s in per_seed])
        out[key], out[f"{key}_std"] = round(mean, 4), round(std, 4)
    return out


def _scores(rows: list[dict], predicted: Callable[[dict], str | None] = lambda r: r["predicted"],
            actual: Callable[[dict], str | None] = lambda r: r["label"]) -> dict[str, float]:
    kept = [r for r in rows if actual(r) is not None]
    return summarize([actual(r) for r in kept], [predicted(r) or "(outside protocol)" for r in kept])


def oracle_best_epoch(rows: list[dict]) -> dict[str, float]:
    """Scores when every fold keeps the epoch that is best on its own held-out subject."""
    chosen = []
    for fold in sorted({r["fold"] for r in rows}):
        fold_rows = [r for r in rows if r["fold"] == fold]
        epochs = len(fold_rows[0]["predicted_per_epoch"])
        best = max(range(epochs), key=lambda e: sum(r["predicted_per_epoch"][e] == r["label"] for r in fold_rows))
        chosen += [{**r, "predicted": r["predicted_per_epoch"][best]} for r in fold_rows]
    return _scores(chosen)


def variant_metrics(rows: list[dict], variant: str, composite: Callable[[str, str], str | None]) -> dict:
    """Mean ± std over seeds: overall, per data set, composite 3-class; per-class table of the first seed."""
    seeds = _by_seed(rows, variant)
    if not seeds:
        raise ValueError(f"no predictions for variant {variant!r}")
    runs = [seeds[s] for s in sorted(seeds)]
    datasets = sorted({r["dataset"] for r in runs[0]})
    return {
        **_over_seeds([_scores(run) for run in runs]),
        "per_dataset": {d: _over_seeds([_scores([r for r in run if r["dataset"] == d]) for run in runs])
                        for d in datasets},
        "composite_3class": _over_seeds([_scores(run, lambda r: composite(r["dataset"], r["predicted"]),
                                                 lambda r: composite(r["dataset"], r["label"])) for run in runs]),
        "per_class": {c: {k: round(v, 4) for k, v in s.items()}
                      for c, s in per_class_scores([r["label"] for r in runs[0]], [r["predicted"] for r in runs[0]]).items()},
        "oracle_best_epoch_not_a_result": _over_seeds([oracle_best_epoch(run) for run in runs]),
        "clips": len(runs[0]),
    }


def metrics_report(rows: list[dict], variant: str, composite: Callable[[str, str], str | None],
                   protocol: str = PROTOCOL) -> dict:
    """`reports/metrics.json`: the shipped variant's figures; `uf1`, `uar`, `accuracy` at the top."""
    return {"variant": variant, "protocol": protocol, **variant_metrics(rows, variant, composite)}


BASELINES = frozenset(get_args(BaselineVariant))
FROM_SCRATCH = "scratch_e2e"


def ablation_report(rows: list[dict], variants: list[str], shipped: str | None = None,
                    tuning: dict | None = None, protocol: str = PROTOCOL) -> dict:
    """`reports/ablation.json`: UF1/UAR/accuracy (mean ± std over the same seeds and folds)
    per variant, each one's gain over training from scratch, the strongest baseline and
    the shipped variant's margin over it, the AU-oracle ceiling, and where the settings
    were tuned (`tuning`)."""
    table = {}
    for variant in variants:
        runs = [run for _, run in sorted(_by_seed(rows, variant).items())]
        table[variant] = {"kind": "baseline" if variant in BASELINES else "learned",
                          **_over_seeds([_scores(run) for run in runs]),
                          "per_seed_uf1": [round(_scores(run)["uf1"], 4) for run in runs]}
    if FROM_SCRATCH in table:
        for entry in table.values():
            entry["uf1_gain_over_scratch_e2e"] = round(entry["uf1"] - table[FROM_SCRATCH]["uf1"], 4)
    oracle = _by_seed(rows, ORACLE_VARIANT)
    ceiling = _scores(oracle[min(oracle)]) if oracle else None
    report = {
        "protocol": protocol,
        "variants": table,
        "ceiling": None if ceiling is None else {
            "uf1": round(ceiling["uf1"], 4), "uar": round(ceiling["uar"], 4),
            "method": "AU oracle: majority class of the true action-unit set among training subjects, same folds"},
        "tuning": tuning,
    }
    baselines = {name: entry for name, entry in table.items() if entry["kind"] == "baseline"}
    # The strongest of the baselines, training from scratch included: what the shipped model must beat.
    rivals = {**baselines, **({FROM_SCRATCH: table[FROM_SCRATCH]} if FROM_SCRATCH in table else {})}
    rivals.pop(shipped, None)  # scratch_e2e shipped has no rival in itself
    if shipped in table and rivals:
        strongest = max(rivals, key=lambda name: rivals[name]["uf1"])
        report["shipped"] = {"variant": shipped, "uf1": table[shipped]["uf1"], "strongest_rival": strongest,
                             "strongest_rival_uf1": rivals[strongest]["uf1"],
                             "uf1_margin": round(table[shipped]["uf1"] - rivals[strongest]["uf1"], 4)}
    return report


def _au_scores(run: list[dict], au_set: str, predicted: Callable[[dict], str] = lambda r: r["predicted"]
               ) -> dict[str, dict[str, float]]:
    return per_au_f1(au_targets([r["label"] for r in run], au_set), au_targets([predicted(r) for r in run], au_set),
                     au_names(au_set))


def action_unit_report(rows: list[dict], variants: list[str], au_set: str) -> dict:
    """The AU task's rows: mean AU F1 (mean ± std over seeds; per data set), per-AU F1 of the
    first seed, beside the ceiling (a reader of the true AUs: on the synthetic benchmark the
    sheet's AUs are the curves that drew each clip, so it scores 1) and the floor of
    predicting every AU on every clip."""
    table = {}
    for variant in variants:
        runs = [run for _, run in sorted(_by_seed(rows, variant).items())]
        mean, std = _mean_std([mean_au_f1(_au_scores(run, au_set)) for run in runs])
        datasets = sorted({r["dataset"] for r in runs[0]})
        table[variant] = {
            "mean_f1": round(mean, 4), "mean_f1_std": round(std, 4), "seeds": len(runs),
            "per_dataset": {d: round(statistics.fmean(mean_au_f1(_au_scores([r for r in run if r["dataset"] == d],
                                                                             au_set)) for run in runs), 4)
                            for d in datasets},
            "per_au_f1": {name: round(score["f1"], 4) for name, score in _au_scores(runs[0], au_set).items()}}
    first = [run for _, run in sorted(_by_seed(rows, variants[0]).items())][0]
    every_au = "+".join(name[2:] for name in au_names(au_set))
    return {
        "au_set": au_set, "aus": au_names(au_set), "clips": len(first), "variants": table,
        "ceiling": {"mean_f1": round(mean_au_f1(_au_scores(first, au_set, lambda r: r["label"])), 4),
                    "method": "the true action units (exact on the synthetic benchmark), same folds"},
        "always_on": {"mean_f1": round(mean_au_f1(_au_scores(first, au_set, lambda r: every_au)), 4),
                      "method": "every AU predicted on every clip"},
    }


def evaluation_reports(rows: list[dict], variant: str, ablation: list[str], adapters: dict[str, str],
                       tuning: dict | None = None, protocol: str = "loso", au_variants: list[str] = (),
                       au_set: str = "meb12", train_fraction: float = 1.0) -> tuple[dict, dict]:
    """(`metrics.json`, `ablation.json`) of the held-out predictions; `adapters` maps each data
    set to its adapter, which says how its labels map onto the MEGC composite; `tuning`
    says where the settings were chosen (both reports record it); `protocol` is
    `finetune.protocol` (loso or lodo: per data set is then per held-out data set);
    `au_variants` the AU task's rows (`ablation.json`'s `action_units`) over `au_set`;
    `train_fraction` the share of each fold's training labels the class rows learned from."""
    def composite(dataset: str, label: str | None) -> str | None:
        return composite_label(adapters[dataset], label)

    described = LODO_PROTOCOL if protocol == "lodo" else PROTOCOL
    if train_fraction < 1:
        described += f"; class rows trained on {train_fraction:.0%} of each fold's training clips (class-stratified)"
    metrics = {**metrics_report(rows, variant, composite, described), "tuning": tuning}
    report = ablation_report(rows, ablation, variant, tuning, described)
    if au_variants:
        report["action_units"] = action_unit_report(rows, list(au_variants), au_set)
    return metrics, report


def describe_evaluation(metrics: dict, ablation: dict) -> str:
    """The shipped variant's figures, then one line per ablation row and the ceiling."""
    lines = [f"{metrics['variant']}: UF1 {metrics['uf1']:.3f} ± {metrics['uf1_std']:.3f}, "
             f"UAR {metrics['uar']:.3f} ± {metrics['uar_std']:.3f}, accuracy {metrics['accuracy']:.3f}"]
    for variant, entry in ablation["variants"].items():
        lines.append(f"  {variant:17s} {entry['kind']:8s} UF1 {entry['uf1']:.3f} ± {entry['uf1_std']:.3f}  "
                     f"UAR {entry['uar']:.3f} ± {entry['uar_std']:.3f}")
    if ablation["ceiling"]:
        lines.append(f"  {'ceiling':17s} {'':8s} UF1 {ablation['ceiling']['uf1']:.3f} (AU oracle)")
    if shipped := ablation.get("shipped"):
        lines.append(f"  {shipped['variant']} vs the strongest rival {shipped['strongest_rival']}: "
                     f"{shipped['uf1_margin']:+.3f} UF1")
    if units := ablation.get("action_units"):
        lines.append(f"action units ({units['au_set']}, {len(units['aus'])} AUs), mean AU F1:")
        lines += [f"  {variant:17s} {entry['mean_f1']:.3f} ± {entry['mean_f1_std']:.3f}"
                  for variant, entry in units["variants"].items()]
        lines.append(f"  {'ceiling':17s} {units['ceiling']['mean_f1']:.3f} (true AUs); every AU on: "
                     f"{units['always_on']['mean_f1']:.3f}")
    return "\n".join(lines)


def _figure(entry: dict, key: str) -> str:
    std = entry.get(f"{key}_std")
    return f"{entry[key]:.3f}" + (f" ± {std:.3f}" if std is not None else "")


def _validation_outcome(validation: dict) -> str:
    return (f"{'passed' if validation.get('success') else 'FAILED'} ({validation.get('rows', '?')} clips, "
            f"{validation.get('failed', '?')} failed check(s))")


def _model_lines(variant: str, model: dict) -> list[str]:
    pretraining, protocol = learned_variant(variant) or ("?", "?")
    start = "random weights (no pre-training)" if pretraining == "scratch" else f"{pretraining} pre-trained encoders"
    how = "fine-tuned end to end" if protocol == "e2e" else "a head trained over frozen encoders"
    lines = ["## Model", f"- `{variant}`: MIACNet from {start}, {how}, on every subject."]
    if not model:
        return [*lines, ""]
    reads = "the grey apex − onset difference"
    if model.get("action_input") == "difference_flow":
        motion = model.get("motion", {})
        reads += (f" and the onset→apex optical flow and strain ({motion.get('flow')}, magnification "
                  f"{motion.get('magnification', 0):g}; estimated at prediction as in training)")
    return [*lines, f"- Encoders: `{model.get('encoder')}`; the action branch reads {reads}.", ""]


def model_card_markdown(*, model_name: str, variant: str, classes: list[str], datasets: dict[str, str],
                        protocol: str, data_version: str, git_commit: str, metrics: dict, ablation: dict,
                        validation: dict, model: dict | None = None, landmark_model: str = "dlib68") -> str:
    """The registered version's description: what it is, what it was trained and scored
    on, how well, and what it must not be used for. `datasets` maps name → adapter;
    `model` is the final model's metadata (encoder, action input, motion settings);
    `landmark_model` the dlib shape predictor its faces were aligned with."""
    lines = [
        f"# {model_name}: MIACNet micro-expression classifier (`{variant}`)",
        "",
        *_model_lines(variant, model or {}),
        "## Data",
        f"- Data sets (name: layout): {', '.join(f'{n}: {a}' for n, a in sorted(datasets.items()))}",
        f"- Processed data version (DVC md5): `{data_version}`; code: git `{git_commit}`",
        f"- Validation: {_validation_outcome(validation)}",
        f"- Classes: {', '.join(classes)}",
        "",
        "## Protocol",
        f"- `{protocol}`: {metrics.get('protocol', PROTOCOL)}.",
        f"- Mean ± std over {metrics.get('seeds', '?')} seed(s); the figures come from held-out subjects only.",
        "",
        "## Metrics",
        "| scope | UF1 | UAR | accuracy |",
        "|---|---|---|---|",
        f"| all ({metrics.get('clips', '?')} clips) | {_figure(metrics, 'uf1')} | {_figure(metrics, 'uar')} "
        f"| {_figure(metrics, 'accuracy')} |",
    ]
    for name, entry in sorted(metrics.get("per_dataset", {}).items()):
        lines.append(f"| {name} | {_figure(entry, 'uf1')} | {_figure(entry, 'uar')} | {_figure(entry, 'accuracy')} |")
    if composite := metrics.get("composite_3class"):
        lines.append(f"| composite 3-class | {_figure(composite, 'uf1')} | {_figure(composite, 'uar')} "
                     f"| {_figure(composite, 'accuracy')} |")
    if oracle := metrics.get("oracle_best_epoch_not_a_result"):
        lines += ["", f"For comparison with papers only: 'oracle best epoch' (each fold's best epoch picked on its "
                      f"own test subject — optimistic, not a result) UF1 {_figure(oracle, 'uf1')}."]
    lines += ["", "## Ablation (same folds and seeds)", "| variant | kind | UF1 | UAR | gain over scratch_e2e |",
              "|---|---|---|---|---|"]
    for name, entry in ablation.get("variants", {}).items():
        lines.append(f"| {name} | {entry.get('kind', '')} | {_figure(entry, 'uf1')} | {_figure(entry, 'uar')} "
                     f"| {entry.get('uf1_gain_over_scratch_e2e', 0):+.3f} |")
    if ceiling := ablation.get("ceiling"):
        lines.append(f"| ceiling ({ceiling['method']}) | | {ceiling['uf1']:.3f} | {ceiling['uar']:.3f} | |")
    if shipped := ablation.get("shipped"):
        lines += ["", f"The shipped `{shipped['variant']}` against the strongest rival, `{shipped['strongest_rival']}`"
                      f" (UF1 {shipped['strongest_rival_uf1']:.3f}): {shipped['uf1_margin']:+.3f} UF1."]
    if tuning := ablation.get("tuning"):
        lines += ["", f"Every setting was chosen on the tuning benchmark (synthetic, `synthesize.seed` "
                      f"{', '.join(map(str, tuning['tuned_on_seeds']))}: other faces); these figures come from "
                      f"the reported one (seed {tuning['reported_on_seed']}), touched only to report."]
    lines += [
        "",
        "## Intended use",
        "- Research on facial micro-expressions: scoring aligned clips or short video windows of consenting "
        "participants, recorded like the training data (frontal face, steady light, high frame rate).",
        "- Input: aligned RGB clips (N, T, H, W, 3) uint8 with the apex at T // 2, or a video through `mer predict`.",
        _output_line(model or {}, ablation),
        "",
        "## Limits",
        "- Trained on few subjects; figures on other populations, cameras, frame rates or spontaneous "
        "everyday video are unknown and likely lower.",
        "- The embedded default is synthetic: its figures say the pipeline works, not that faces are understood.",
        "- A probability is not evidence of a person's emotion, intent or truthfulness.",
        "",
        "## Ethics and consent",
        "- Not for deception detection, hiring, policing, border control, surveillance or any decision about a "
        "person; emotion inference from faces is contested science.",
        "- Use only on people who gave informed consent; licensed data sets keep their own licence terms.",
        *_landmark_licence(landmark_model),
        "- Subjects appear only as keyed pseudonyms downstream of `anonymize`; the key is never in the registry.",
    ]
    return "\n".join(lines) + "\n"


def _output_line(model: dict, ablation: dict) -> str:
    readout = model.get("action_units")
    if readout is None:
        return "- Output: one probability per class."
    f1 = ablation.get("action_units", {}).get("variants", {}).get("au_flow_lr", {}).get("mean_f1")
    held_out = f"; held out, its mean F1 is {f1:.3f}" if f1 is not None else ""
    return (f"- Output: one probability per class, and for a video one per action unit "
            f"({', '.join(unit_names(readout.units))}) from `au_flow_lr` fitted on every clip{held_out}.")


def _landmark_licence(landmark_model: str) -> list[str]:
    if landmark_model == "dlib68":
        return ["- Faces were aligned with dlib's 68-point shape predictor, trained on iBUG 300-W, whose terms "
                "exclude commercial use: this model and its serving path are for research. For commercial use, "
                "ingest and train again with `ingest.landmark_model: dlib5` (no such limit)."]
    return [f"- Faces were aligned with dlib's shape predictor `{landmark_model}` (no commercial-use limit known)."]


def run_summary_markdown(*, ran: list[str], skipped: list[str], metrics: dict | None, validation: dict | None,
                         registry: dict | None, report: str | None, tracking_uri: str) -> str:
    """The Prefect artifact a person reads after a pipeline run: which stages ran and which
    DVC skipped (unchanged), the current figures, and the registry's decision when `register` ran."""
    lines = ["# mer pipeline run", "",
             f"- Ran: {', '.join(ran) or 'nothing (every stage was up to date)'}",
             f"- Skipped, unchanged: {', '.join(skipped) or 'none'}"]
    if validation is not None:
        lines.append(f"- Validation: {_validation_outcome(validation)}")
    if metrics is not None:
        state = "" if "evaluate" in ran else " (unchanged by this run)"
        lines.append(f"- LOSO ({metrics.get('variant')}){state}: UF1 {_figure(metrics, 'uf1')}, "
                     f"UAR {_figure(metrics, 'uar')}, accuracy {_figure(metrics, 'accuracy')}")
    if registry is not None and "register" in ran:
        lines.append(f"- Registry: {registry['model_name']} version {registry['version']} → "
                     f"`{registry['alias']}` ({registry['reason']})")
        lines.append(f"- MLflow run: `{registry['run_id']}` in `{tracking_uri}`")
    elif "register" in skipped:
        lines.append("- Registry: nothing registered (the model did not change)")
    if report is not None:
        lines.append(f"- Report: {report}")
    return "\n".join(lines) + "\n"


def scores_by_run(rows: list[dict]) -> dict[tuple[str, int], dict[str, float]]:
    """UF1/UAR/accuracy of every (variant, seed) LOSO run, e.g. for one tracking run each."""
    runs: dict[tuple[str, int], list[dict]] = {}
    for row in rows:
        runs.setdefault((row["variant"], row["seed"]), []).append(row)
    return {key: _scores(run) for key, run in sorted(runs.items())}
