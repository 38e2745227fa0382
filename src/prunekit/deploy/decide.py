"""How pk.to_sparse decides a layer's kernel from a cost model and noisy timings: pure functions,
no timing here (deploy/choose.py measures and calls them).

The rule, for a threshold of 1 + margin (a sparse kernel must be that many times faster than
dense to be worth it):

1. The prior is a bytes-and-FLOPs cost model (`predicted_speedups`): the prior's pick is the
   kernel it predicts fastest, if that beats the threshold, else dense.
2. The measurement is a set of interleaved rounds; each round gives a paired ratio dense /
   kernel (timed moments apart, so drift and load hit both alike). A kernel's measured speedup
   is the median of those ratios, with the distribution-free 95 % interval of that median (two
   order statistics; no assumption on the noise's shape, which on a loaded machine is skewed).
3. A kernel *clearly pays* when its whole interval lies above the threshold, and is *clearly
   rejected* when it lies below. Chosen, in order: the kernels that clearly pay; else those the
   prior says pay and the measurement does not clearly reject (the measurement was too noisy
   to overturn the prior), ranked by the prior; else dense.
4. Threads: among those, the best one-thread kernel (by measured median, or by the prior where
   it decided) unless the best multi-thread one is clearly faster (paired interval above 1). A kernel on several threads waits
   for its slowest thread, so on a machine where another process holds a core it is the one
   that collapses; it must earn its threads.
5. A choice that overturns the prior (sparse where it predicted dense, or the reverse) is timed
   again in fresh rounds and kept only if they say the same (`confirm`): the best of a dozen
   noisy kernels is also the luckiest.

So a noisy measurement cannot move a layer the cost model says gains 10x back to dense (its
interval then spans the threshold), while consistent timings can: a prior is a prior. Last
(choose.py), the whole model on the chosen kernels is timed against dense, interleaved, and
stays dense unless it was faster in at least half the paired rounds.
"""
import math
import statistics

from prunekit.deploy.kernels import ONE_THREAD

LEVEL = 0.95
# The cost model's constants, fitted on this project's machine (2 cores of a Zen 3 EPYC; figures
# from docs/results/sparse-kernels.md): dense at batch 1 streams its weights at about 21 GB/s
# and dense GEMM at batch 32 does about 42 GFLOP/s per thread (one 4096x4096 layer). The
# sparse kernels at 90 % and batch 128 ran 3.3x faster than dense: 3x dense GEMM's time per
# multiply-add (at batch 32 they ran 6.1x, 1.6x its time: the larger figure is kept, so the
# prior errs toward dense where a layer is bound by its arithmetic). A convolution on a sparse
# kernel first copies its input into rows (F.unfold, or a permute for a 1x1): the four
# ResNet-50 shapes of that page land on the side of the margin they were measured on when each
# byte of the copy (written, then read) costs as much as 16 streamed bytes. The model is rough (weights held in cache stream
# faster, a call has a fixed cost), on another machine rougher still: it only has to say which
# side of the margin a layer is on, and the timings, tight on a quiet machine, correct it.
DENSE_FLOPS_PER_BYTE = 2.0  # FLOPs one thread of dense GEMM does while memory delivers one byte
SPARSE_TIME_PER_FLOP = 3.0  # a sparse kernel's time per multiply-add, over dense GEMM's
COPY_TIME_PER_BYTE = 16.0   # an input copy into rows (im2col), per byte written or read, over a streamed byte


def cost(nbytes: float, multiply_adds: float, threads: int, sparse: bool, copied: float = 0.0) -> float:
    """A kernel's predicted time, in bytes streamed from memory: the larger of the bytes it reads
    and writes and the time its FLOPs take (a roofline), after the time of copying `copied`
    bytes of input into rows."""
    flops = 2.0 * multiply_adds * (SPARSE_TIME_PER_FLOP if sparse else 1.0)
    return copied * COPY_TIME_PER_BYTE + max(float(nbytes), flops / (DENSE_FLOPS_PER_BYTE * threads))


def predicted_speedups(loads: dict) -> dict:
    """{spec: predicted dense time / spec time} from {spec: (bytes, multiply_adds, threads,
    bytes copied into rows)}, "dense" among them (its ratio is 1)."""
    times = {spec: cost(nbytes, madds, threads, spec != "dense", copied)
             for spec, (nbytes, madds, threads, copied) in loads.items()}
    return {spec: times["dense"] / t for spec, t in times.items()}


def median_interval(values, level: float = LEVEL) -> tuple:
    """(median, low, high): the median and its distribution-free interval, the j-th smallest and
    j-th largest value for the largest j with P(Binomial(n, 1/2) < j) <= (1 - level) / 2
    (9 values: the 2nd and 8th, 96 %). Too few values for the level: (median, 0, inf)."""
    ordered = sorted(values)
    n, tail, j = len(ordered), 0.0, 0
    while j < n and tail + math.comb(n, j) / 2 ** n <= (1 - level) / 2:
        tail += math.comb(n, j) / 2 ** n
        j += 1
    median = statistics.median(ordered)
    if j == 0:
        return median, 0.0, math.inf
    return median, ordered[j - 1], ordered[n - j]


def paired(slow, fast) -> tuple:
    """median_interval of slow[r] / fast[r] over rounds r: how many times faster `fast` ran."""
    return median_interval([s / f for s, f in zip(slow, fast)])


def spec_threads(spec: str, threads: int) -> int:
    return 1 if spec.endswith(ONE_THREAD) else threads


def decide(prior: dict, samples: dict, margin: float, threads: int) -> dict:
    """The layer's kernel from the prior ({spec: predicted speedup}) and the timings ({spec:
    [seconds per round]}, "dense" among them, rounds paired by index): {"kernel",
    "prior_kernel", "measured" {spec: (median, low, high)}, "overturns", "at_issue", "reason"}."""
    threshold = 1 + margin
    sparse = [k for k in samples if k != "dense"]
    measured = {k: paired(samples["dense"], samples[k]) for k in sparse}
    hopes = [k for k in sparse if prior[k] >= threshold]
    prior_kernel = max(hopes, key=prior.get) if hopes else "dense"
    paying = [k for k in sparse if measured[k][1] > threshold]
    unrefuted = [k for k in hopes if measured[k][2] >= threshold]
    if paying:
        kernel, note = _fewest_threads(paying, samples, {k: measured[k][0] for k in paying}, threads)
        if prior[kernel] >= threshold:
            verdict = f"agrees with the cost model ({prior[kernel]:.2f}x)"
        elif prior_kernel != "dense":
            verdict = f"agrees with the cost model's sparse choice ({prior_kernel} {prior[prior_kernel]:.2f}x)"
        else:
            verdict = f"overturns the cost model (at most {_best_prior(prior)}, below {threshold:.2f}x)"
        reason, issue = f"measured {show(measured[kernel])} over dense, {verdict}", kernel
    elif unrefuted:
        # too noisy to say whether sparse pays, and so which kernel: the cost model ranks them
        kernel, note = _fewest_threads(unrefuted, samples, prior, threads)
        reason = (f"cost model: {prior[kernel]:.2f}x predicted; the measurement ({show(measured[kernel])}) "
                  f"did not clearly overturn it")
        issue = None  # the prior's own choice
    else:
        kernel, note = "dense", ""
        pool = hopes or sparse
        issue = max(pool, key=lambda k: measured[k][0]) if pool else None  # the prior's best hope
        seen = f"best measured {issue} {show(measured[issue])}" if issue else "no kernel fits"
        reason = (f"{seen}, clearly below {threshold:.2f}x: overturns the cost model ({prior[prior_kernel]:.2f}x)"
                  if hopes else f"cost model: at most {_best_prior(prior)}, below {threshold:.2f}x; {seen}")
    overturns = (kernel == "dense") != (prior_kernel == "dense")
    # at_issue: what fresh rounds time against dense when the prior is overturned
    return {"kernel": kernel, "prior_kernel": prior_kernel, "measured": measured, "overturns": overturns,
            "at_issue": issue if overturns else None, "reason": reason + note}


def confirm(first: dict, again: dict) -> dict:
    """The verdict after fresh rounds: the first if the fresh rounds chose the same, else theirs."""
    if again["kernel"] == first["kernel"]:
        return {**first, "reason": first["reason"] + "; confirmed in fresh rounds"}
    return {**again, "prior_kernel": first["prior_kernel"], "measured": first["measured"],
            "reason": f"{again['reason']} (in fresh rounds; the first rounds chose {first['kernel']})"}


def _fewest_threads(specs, samples, rank, threads) -> tuple:
    """The first by `rank` ({spec: higher is better}) among the one-thread specs, unless the first
    multi-thread one is clearly faster than it; (spec, a note when threads decided)."""
    one = [k for k in specs if spec_threads(k, threads) == 1]
    many = [k for k in specs if spec_threads(k, threads) > 1]
    best_one = max(one, key=rank.get) if one else None
    best_many = max(many, key=rank.get) if many else None
    if best_one is None or best_many is None:
        return best_one or best_many, ""
    gain = paired(samples[best_one], samples[best_many])
    if gain[1] > 1:
        return best_many, ""
    if gain[0] > 1:
        return best_one, f"; one thread: {best_many} on {threads} was not clearly faster ({show(gain)})"
    return best_one, ""


def _best_prior(prior) -> str:
    best = max((k for k in prior if k != "dense"), key=prior.get, default=None)
    return f"{best} {prior[best]:.2f}x" if best else "no sparse kernel"


def show(interval) -> str:
    median, low, high = interval
    return f"{median:.2f}x [{low:.2f}-{high:.2f}]" if math.isfinite(high) else f"{median:.2f}x [too few rounds]"
