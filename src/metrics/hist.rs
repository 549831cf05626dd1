//! Latency histograms: a shard-local delta form and a mergeable published form.
//!
//! Both are HdrHistograms with the same bounds (1 µs .. 60 s, 3 significant
//! digits), so folding one into another is an index-by-index add. The local
//! delta uses `u32` counts (half the memory; it is drained every publish, so
//! it cannot overflow) and the published/merged form uses `u64`. Each keeps
//! an exact sum of recorded microseconds alongside, because Prometheus'
//! `_sum` should not be an estimate.

use hdrhistogram::Histogram;
use std::fmt::Write as _;

/// Lowest discernible value, µs.
pub const LOWEST_US: u64 = 1;
/// Highest trackable value, µs (60 s). Larger samples are clamped to it.
pub const HIGHEST_US: u64 = 60_000_000;
/// Significant decimal digits kept.
pub const SIGFIG: u8 = 3;
/// The percentiles printed by `ringlb stats` and returned in JSON, in order.
pub const PERCENTILE_POINTS: [(&str, f64); 6] = [
    ("50", 50.0),
    ("75", 75.0),
    ("90", 90.0),
    ("99", 99.0),
    ("99.9", 99.9),
    ("99.99", 99.99),
];

fn new_hist<T: hdrhistogram::Counter>() -> Histogram<T> {
    Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGFIG).expect("static bounds are valid")
}

/// A shard-local histogram, drained into a [`LatencyHist`] on publish.
pub(crate) struct DeltaHist {
    h: Histogram<u32>,
    sum_us: u64,
}

impl DeltaHist {
    pub(crate) fn new() -> Self {
        DeltaHist {
            h: new_hist(),
            sum_us: 0,
        }
    }

    #[inline]
    pub(crate) fn record(&mut self, us: u64) {
        let us = us.min(HIGHEST_US);
        self.h.saturating_record(us);
        self.sum_us = self.sum_us.wrapping_add(us);
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.h.is_empty()
    }

    /// Move every sample into `dst` and clear self. Walks only up to the
    /// highest recorded bucket.
    pub(crate) fn drain_into(&mut self, dst: &mut LatencyHist) {
        if self.h.is_empty() {
            return;
        }
        for v in self.h.iter_recorded() {
            dst.h
                .saturating_record_n(v.value_iterated_to(), u64::from(v.count_at_value()));
        }
        dst.sum_us = dst.sum_us.wrapping_add(self.sum_us);
        self.h.reset();
        self.sum_us = 0;
    }
}

/// A mergeable latency histogram in microseconds, with an exact sum.
#[derive(Clone)]
pub struct LatencyHist {
    h: Histogram<u64>,
    sum_us: u64,
}

impl Default for LatencyHist {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for LatencyHist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyHist")
            .field("count", &self.count())
            .field("sum_us", &self.sum_us)
            .field("max_us", &self.h.max())
            .finish()
    }
}

/// Summary of a histogram; all values in µs (`mean`/`stdev` as floats).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Percentiles {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub stdev: f64,
    /// Values at [`PERCENTILE_POINTS`], in order: p50, p75, p90, p99, p99.9, p99.99.
    pub points: [u64; 6],
    pub max: u64,
}

impl LatencyHist {
    pub fn new() -> Self {
        LatencyHist {
            h: new_hist(),
            sum_us: 0,
        }
    }

    /// Record one sample (µs, clamped to [`HIGHEST_US`]). For control-side
    /// use and tests; shards record through their `ShardRecorder`.
    pub fn record(&mut self, us: u64) {
        self.record_n(us, 1);
    }

    /// Record `n` samples of `us`.
    pub fn record_n(&mut self, us: u64, n: u64) {
        let us = us.min(HIGHEST_US);
        self.h.saturating_record_n(us, n);
        self.sum_us = self.sum_us.wrapping_add(us.wrapping_mul(n));
    }

    /// Rebuild from `(value_us, count)` pairs as produced by [`LatencyHist::buckets`]
    /// and a known sum (for clients reading `/stats?buckets=1`).
    pub fn from_buckets<I: IntoIterator<Item = (u64, u64)>>(buckets: I, sum_us: u64) -> Self {
        let mut h = LatencyHist::new();
        for (v, c) in buckets {
            h.h.saturating_record_n(v.min(HIGHEST_US), c);
        }
        h.sum_us = sum_us;
        h
    }

    pub fn count(&self) -> u64 {
        self.h.len()
    }

    pub fn is_empty(&self) -> bool {
        self.h.is_empty()
    }

    pub fn sum_us(&self) -> u64 {
        self.sum_us
    }

    /// The underlying HdrHistogram.
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.h
    }

    pub fn max(&self) -> u64 {
        self.h.max()
    }

    /// Value (µs) at percentile `p` in 0..=100 (0 when empty).
    pub fn value_at_percentile(&self, p: f64) -> u64 {
        self.h.value_at_percentile(p)
    }

    /// Number of samples whose bucket starts at or below `us`.
    pub fn count_le(&self, us: u64) -> u64 {
        self.h.count_between(0, us)
    }

    pub fn add(&mut self, other: &LatencyHist) {
        if other.h.is_empty() {
            self.sum_us = self.sum_us.wrapping_add(other.sum_us);
            return;
        }
        // Same bounds on both sides: cannot fail.
        self.h
            .add(&other.h)
            .expect("histograms share one configuration");
        self.sum_us = self.sum_us.wrapping_add(other.sum_us);
    }

    /// `self - base`, bucket by bucket, saturating at zero. Used for reset
    /// windows: `base` is an earlier state of the same monotonic data.
    pub fn minus(&self, base: &LatencyHist) -> LatencyHist {
        if base.h.is_empty() {
            let mut out = self.clone();
            out.sum_us = self.sum_us.saturating_sub(base.sum_us);
            return out;
        }
        let mut out = LatencyHist::new();
        for v in self.h.iter_recorded() {
            let value = v.value_iterated_to();
            let c = v.count_at_value().saturating_sub(base.h.count_at(value));
            if c > 0 {
                out.h.saturating_record_n(value, c);
            }
        }
        out.sum_us = self.sum_us.saturating_sub(base.sum_us);
        out
    }

    /// Non-empty buckets as `(highest equivalent value µs, count)`, ascending.
    pub fn buckets(&self) -> Vec<(u64, u64)> {
        self.h
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect()
    }

    pub fn percentiles(&self) -> Percentiles {
        let h = &self.h;
        if h.is_empty() {
            return Percentiles::default();
        }
        let mut points = [0u64; 6];
        for (slot, (_, p)) in points.iter_mut().zip(PERCENTILE_POINTS.iter()) {
            *slot = h.value_at_percentile(*p);
        }
        Percentiles {
            count: h.len(),
            min: h.min(),
            mean: h.mean(),
            stdev: h.stdev(),
            points,
            max: h.max(),
        }
    }

    /// Fraction of samples within mean ± stdev (wrk's "+/- Stdev" column).
    pub fn within_stdev(&self) -> f64 {
        if self.h.is_empty() {
            return 0.0;
        }
        let mean = self.h.mean();
        let sd = self.h.stdev();
        let lo = (mean - sd).max(0.0) as u64;
        let hi = (mean + sd).max(0.0) as u64;
        self.h.count_between(lo, hi) as f64 / self.h.len() as f64
    }
}

/// HdrHistogram's classic "percentile distribution" text (the format of
/// `outputPercentileDistribution`, readable by the HdrHistogram plotter).
/// Values are divided by `unit_ratio` (1000.0 prints milliseconds).
pub fn percentile_distribution(h: &LatencyHist, ticks_per_half: u32, unit_ratio: f64) -> String {
    let hist = h.histogram();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    if !hist.is_empty() {
        let mut total = 0u64;
        for v in hist.iter_quantiles(ticks_per_half) {
            total += v.count_since_last_iteration();
            let q = v.quantile_iterated_to();
            let value = v.value_iterated_to() as f64 / unit_ratio;
            if q < 1.0 {
                let _ = writeln!(
                    out,
                    "{:>12.3} {:>2.12} {:>10} {:>14.2}",
                    value,
                    q,
                    total,
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(out, "{:>12.3} {:>2.12} {:>10}", value, q, total);
            }
        }
    }
    let (mean, sd) = if hist.is_empty() {
        (0.0, 0.0)
    } else {
        (hist.mean(), hist.stdev())
    };
    let _ = writeln!(
        out,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        mean / unit_ratio,
        sd / unit_ratio
    );
    let _ = writeln!(
        out,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        hist.max() as f64 / unit_ratio,
        hist.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        hist.buckets(),
        2048
    );
    out
}
