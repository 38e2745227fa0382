"""Mean and standard deviation over seeds, as every benchmark here reports them."""
import statistics


def mean_std(values) -> dict:
    values = list(values)
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def summarize(runs, keys, unit="% test error") -> dict:
    """{key: mean_std over runs}, each printed as 'key: mean +- std unit'."""
    summary = {key: mean_std(run[key] for run in runs) for key in keys}
    for key, s in summary.items():
        print(f"{key:>8}: {s['mean']:.2f} +- {s['std']:.2f} {unit}")
    return summary
