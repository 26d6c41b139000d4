"""`reports/report.html`: one self-contained page a person opens offline — the shipped
model's figures, the ablation with every baseline, confusion matrices, learning curves,
the registry's decision against the champion, the data and its validation.

Self-contained on purpose: pictures are inline PNGs (`data:` URIs), the style is inline,
and nothing is loaded from a network (DVC's and Great Expectations' pages load scripts
from CDNs and render blank offline).
"""

from __future__ import annotations

import base64
from html import escape

from mer_core.evaluation.report import PROTOCOL

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 68em; color: #1d2733; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { border-bottom: 1px solid #d8dee6; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .6em 0; } th, td { border: 1px solid #d8dee6; padding: .25em .6em; }
th { background: #f2f5f8; text-align: left; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.shipped td { font-weight: 600; background: #eef6ee; } .note { color: #5b6773; font-size: .92em; }
.badge { display: inline-block; padding: .1em .6em; border-radius: .8em; font-weight: 600; }
.ok { background: #dcefdc; color: #1e5b1e; } .bad { background: #f6dada; color: #7a1d1d; }
.challenger { background: #fff1cc; color: #6b4e00; } img { max-width: 100%; border: 1px solid #e4e8ee; }
"""


def _n(value, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _pm(entry: dict, key: str) -> str:
    std = entry.get(f"{key}_std")
    return _n(entry.get(key)) + (f" ± {std:.3f}" if std is not None else "")


def _table(header: list[str], rows: list[list[str]], numeric_from: int = 1,
           row_classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cells = "".join(f'<td class="n">{escape(c)}</td>' if j >= numeric_from else f"<td>{escape(c)}</td>"
                        for j, c in enumerate(row))
        css = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        body.append(f"<tr{css}>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _png(title: str, data: bytes) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<figure><img alt="{escape(title)}" src="data:image/png;base64,{encoded}"><figcaption class="note">' \
           f"{escape(title)}</figcaption></figure>"


def _badge(text: str, css: str) -> str:
    return f'<span class="badge {css}">{escape(text)}</span>'


def registry_section(registry: dict | None) -> str:
    """The registry's decision: this version against the champion it was compared with."""
    if registry is None:
        return "<h2>Registry</h2><p>The register stage has not run: no model version to compare.</p>"
    alias = registry["alias"]
    css = "ok" if alias == "champion" else "challenger"
    rows = [["this run", f"version {registry['version']}", alias, _n(registry.get("uf1"), 4)]]
    if registry.get("previous_champion"):
        rows.append(["champion before this run", f"version {registry['previous_champion']}", "champion",
                     _n(registry.get("champion_uf1"), 4)])
    return (f"<h2>Champion vs challenger</h2><p>{escape(registry['model_name'])} version {escape(str(registry['version']))} "
            f"→ {_badge(alias, css)}</p><p>{escape(registry['reason'])}</p>"
            + _table(["", "model", "alias", "LOSO UF1"], rows, numeric_from=3)
            + f"<p class='note'>Protocol <code>{escape(registry.get('protocol', ''))}</code>, data version "
              f"<code>{escape(registry.get('data_version', ''))}</code>. A version becomes champion only if its "
              "UF1 beats the champion's by the promotion margin under the same protocol and data version.</p>")


def metrics_section(metrics: dict) -> str:
    rows = [[f"all ({metrics.get('clips', '?')} clips)", _pm(metrics, "uf1"), _pm(metrics, "uar"),
             _pm(metrics, "accuracy")]]
    rows += [[name, _pm(e, "uf1"), _pm(e, "uar"), _pm(e, "accuracy")]
             for name, e in sorted(metrics.get("per_dataset", {}).items())]
    if composite := metrics.get("composite_3class"):
        rows.append(["MEGC composite, 3 classes", _pm(composite, "uf1"), _pm(composite, "uar"),
                     _pm(composite, "accuracy")])
    per_class = metrics.get("per_class", {})
    class_rows = [[name, *(_n(scores.get(k)) for k in ("f1", "recall", "precision")), str(scores.get("support", ""))]
                  for name, scores in per_class.items()]
    oracle = metrics.get("oracle_best_epoch_not_a_result")
    return (f"<h2>The shipped model: <code>{escape(metrics['variant'])}</code></h2>"
            f"<p class='note'>{escape(metrics.get('protocol', PROTOCOL))}; mean ± std over "
            f"{metrics.get('seeds', '?')} seed(s), held-out subjects only.</p>"
            + _table(["scope", "UF1", "UAR", "accuracy"], rows)
            + (("<p>Per class (first seed)</p>" + _table(["class", "F1", "recall", "precision", "clips"], class_rows))
               if class_rows else "")
            + (f"<p class='note'>For comparison with papers only, not a result: each fold's best epoch picked on "
               f"its own test subject gives UF1 {_pm(oracle, 'uf1')}.</p>" if oracle else ""))


def ablation_section(ablation: dict) -> str:
    variants = ablation.get("variants", {})
    shipped = (ablation.get("shipped") or {}).get("variant")
    rows, classes = [], []
    for name, e in sorted(variants.items(), key=lambda item: -item[1]["uf1"]):
        rows.append([name, e["kind"], _pm(e, "uf1"), _pm(e, "uar"), ", ".join(f"{v:.3f}" for v in e.get("per_seed_uf1", [])),
                     f"{e.get('uf1_gain_over_scratch_e2e', 0):+.3f}"])
        classes.append("shipped" if name == shipped else "")
    if ceiling := ablation.get("ceiling"):
        rows.append(["ceiling (AU oracle)", "", _n(ceiling["uf1"]), _n(ceiling["uar"]), "", ""])
        classes.append("")
    text = ""
    if s := ablation.get("shipped"):
        text += (f"<p>The shipped <code>{escape(s['variant'])}</code> against the strongest rival, "
                 f"<code>{escape(s['strongest_rival'])}</code> (UF1 {s['strongest_rival_uf1']:.3f}): "
                 f"<b>{s['uf1_margin']:+.3f} UF1</b>.</p>")
    if tuning := ablation.get("tuning"):
        text += (f"<p class='note'>Every setting was chosen on the tuning benchmark (synthetic seeds "
                 f"{escape(', '.join(map(str, tuning['tuned_on_seeds'])))}); these figures come from seed "
                 f"{escape(str(tuning['reported_on_seed']))}, touched only to report.</p>")
    return ("<h2>Ablation and baselines (same folds and seeds)</h2>"
            + _table(["row", "kind", "UF1", "UAR", "UF1 per seed", "gain over scratch_e2e"], rows, numeric_from=2,
                     row_classes=classes) + text)


def data_section(ingest: dict | None, anonymization: dict | None, features: dict | None,
                 validation: dict | None) -> str:
    parts = ["<h2>Data</h2>"]
    if ingest:
        parts.append(_table(["data set", "items listed", "clips", "rejected", "frames decoded"],
                            [[name, str(s.get("clips_listed", "")), str(s.get("rows", "")), str(s.get("rejected", "")),
                              str(s.get("frames_decoded", ""))] for name, s in sorted(ingest.items())]))
    if anonymization:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(anonymization.get("rows_by_kind", {}).items()))
        findings = len(anonymization.get("leak_scan", {}).get("findings", []))
        parts.append(f"<p>After anonymisation: {anonymization.get('rows', '?')} clips ({escape(kinds)}) of "
                     f"{anonymization.get('subjects', '?')} pseudonymous subjects; background "
                     f"{'masked' if anonymization.get('masked_outside_face') else 'kept'}; leak scan: "
                     f"{findings} finding(s).</p>")
    if features:
        parts.append(f"<p>Motion features: {escape(str(features.get('method')))} flow of {features.get('clips')} micro "
                     f"clips (magnification {features.get('magnification', 0):g}).</p>")
    if validation is not None:
        ok = bool(validation.get("success"))
        failed = [c for c in validation.get("checks", []) if not c.get("success")]
        parts.append(f"<p>Validation (Great Expectations): {_badge('passed' if ok else 'FAILED', 'ok' if ok else 'bad')} "
                     f"{len(validation.get('checks', []))} checks on {validation.get('rows', '?')} clips, "
                     f"{validation.get('failed', len(failed))} failed.</p>")
        if failed:
            parts.append("<ul>" + "".join(f"<li>{escape(c.get('description', c.get('expectation', '')))}</li>"
                                          for c in failed) + "</ul>")
    return "".join(parts)


def render_report(*, metrics: dict, ablation: dict, registry: dict | None, pictures: dict[str, bytes],
                  ingest: dict | None = None, anonymization: dict | None = None, features: dict | None = None,
                  validation: dict | None = None) -> str:
    """The whole page. `pictures` maps a caption to PNG bytes (confusion matrices, learning curves)."""
    headline = (f"<p><b>{escape(metrics['variant'])}</b>: UF1 {_pm(metrics, 'uf1')}, UAR {_pm(metrics, 'uar')}, "
                f"accuracy {_pm(metrics, 'accuracy')} (leave-one-subject-out)"
                + (f"; registry: version {escape(str(registry['version']))} → <b>{escape(registry['alias'])}</b>"
                   if registry else "") + "</p>")
    figures = "".join(_png(title, data) for title, data in pictures.items())
    body = [
        "<h1>mer — micro-expression recognition: run report</h1>", headline,
        registry_section(registry), metrics_section(metrics), ablation_section(ablation),
        "<h2>Confusion matrices and learning curves</h2>", figures or "<p>No plots in this run.</p>",
        data_section(ingest, anonymization, features, validation),
        "<p class='note'>The embedded default data set is synthetic: these figures say the pipeline works, not "
        "that real faces are understood. Not for decisions about people.</p>",
    ]
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>mer run report</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")
