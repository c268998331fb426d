"""Convergence curves: quality (WER) against time since run_start and against epoch (or samples), one line per
run; multi-metric (dict) qualities are left to the text report.

matplotlib is imported here only, with the file-only Agg backend, so the text report needs no display and
doesn't pay for the import.
"""
import io


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def draw(systems):
    """A matplotlib Figure for {system: [RunSummary]}: left WER vs minutes, right WER vs epoch."""
    plt = _pyplot()
    fig, (by_time, by_epoch) = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    targets = set()
    for index, (system, runs) in enumerate(systems.items()):
        color = colors[index % len(colors)]
        for number, run in enumerate(runs):
            if not run.evals:
                continue
            label = system if number == 0 else None
            style = "-" if run.converged else "--"   # dashed: did not converge
            numeric = [e for e in run.evals if isinstance(e.value, float)]   # dict qualities: text report only
            by_time.plot([e.minutes for e in numeric], [e.value for e in numeric], style, color=color,
                         marker=".", label=label, alpha=0.8)
            points = [(e.epoch, e.value) for e in numeric if e.epoch is not None]
            if points:
                by_epoch.plot(*zip(*points), style, color=color, marker=".", label=label, alpha=0.8)
            if run.target is not None:
                targets.add(run.target)
    metric = _metric_name(systems)
    units = {run.progress_unit for runs in systems.values() for run in runs}
    for axis, xlabel in ((by_time, "minutes since run_start"), (by_epoch, "/".join(sorted(units)) or "epochs")):
        for target in sorted(targets):
            axis.axhline(target, color="black", linestyle=":", linewidth=1)
            axis.annotate(f"target {target:g}", (0, target), xycoords=("axes fraction", "data"),
                          textcoords="offset points", xytext=(4, 3), fontsize=8)
        axis.set_xlabel(xlabel)
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
    from matplotlib.ticker import MaxNLocator
    by_epoch.xaxis.set_major_locator(MaxNLocator(integer=True))
    by_time.set_title(f"{metric} vs time (dashed: not converged)")
    by_epoch.set_title(f"{metric} vs epoch")
    if systems:
        by_time.legend(fontsize=8)
    return fig


def _metric_name(systems):
    lower = {run.lower_is_better for runs in systems.values() for run in runs}
    return "WER" if lower == {True} else "eval_accuracy"


def png_bytes(systems, software=None):
    """The curves as PNG bytes; `software` goes into the PNG's Software text field (who wrote it)."""
    plt = _pyplot()
    fig = draw(systems)
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=110, metadata={"Software": software} if software else None)
    finally:
        plt.close(fig)
    return buffer.getvalue()
