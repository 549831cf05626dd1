//! SVG plots of one or more runs on the same axes (`plotters`, SVG only:
//! no font files or image codecs needed, viewable in any browser and on
//! GitHub).
//!
//! Top panel: successes and failures per 10 ms bin around the fault, time
//! relative to the first event of the first run. Bottom panel: the latency
//! percentile curve (from the intended send time) on a "nines" axis.

use std::path::Path;

use plotters::prelude::*;

use super::report::{Kind, Report};

const COLORS: [(RGBColor, RGBColor); 3] = [
    (RGBColor(31, 119, 180), RGBColor(214, 39, 40)),
    (RGBColor(44, 160, 44), RGBColor(255, 127, 14)),
    (RGBColor(148, 103, 189), RGBColor(140, 86, 75)),
];

fn nines(percentile: f64) -> f64 {
    let rest = (1.0 - percentile / 100.0).max(1e-6);
    -rest.log10()
}

fn percentile_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    let s = format!("{p:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

/// The time window shown: the whole run, or around the fault (from 100 ms
/// before the first event to 150 ms after the last failure or event of any
/// run, at least 300 ms after the fault).
fn window(reports: &[Report]) -> (f64, f64, f64) {
    let origin = reports
        .first()
        .and_then(|r| r.events.first())
        .map_or(0.0, |e| e.at_us as f64 / 1000.0);
    let dur = reports.iter().map(|r| r.duration_ms).fold(0.0, f64::max);
    if origin == 0.0 {
        return (0.0, 0.0, dur);
    }
    let mut last = origin + 300.0;
    for r in reports {
        for b in &r.timeline {
            if b.failed_total() > 0 {
                last = last.max(b.t_ms + 150.0);
            }
        }
        for e in &r.events {
            last = last.max(e.at_us as f64 / 1000.0 + 150.0);
        }
    }
    (origin, (origin - 100.0).max(0.0), last.min(dur))
}

fn failures_legend(r: &Report) -> String {
    if r.summary.failures.is_empty() {
        return format!("{}: failed (none)", r.label);
    }
    let kinds: Vec<String> = r
        .summary
        .failures
        .iter()
        .map(|(k, c)| format!("{} {c}", Kind::name(*k)))
        .collect();
    format!("{}: failed ({})", r.label, kinds.join(", "))
}

type Res = Result<(), Box<dyn std::error::Error>>;

/// Write `out` (SVG) with every report on the same axes.
pub fn write_svg(out: &Path, title: &str, reports: &[Report]) -> Res {
    let root = SVGBackend::new(out, (1000, 760)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    let (top, bottom) = root.split_vertically(380);
    let (origin, from, to) = window(reports);
    let ymax = reports
        .iter()
        .flat_map(|r| r.timeline.iter())
        .map(|b| b.ok.max(b.failed_total()))
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.25;
    let x_desc = if origin > 0.0 {
        "ms since the fault (intended send time)"
    } else {
        "ms since the start (intended send time)"
    };
    let mut chart = ChartBuilder::on(&top)
        .caption(
            "requests per 10 ms: answered and failed",
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(50)
        .build_cartesian_2d((from - origin)..(to - origin), 0f64..ymax)?;
    chart
        .configure_mesh()
        .y_label_formatter(&|y| format!("{y:.0}"))
        .x_desc(x_desc)
        .y_desc("requests / 10 ms")
        .draw()?;
    if let Some(r) = reports.first() {
        for e in &r.events {
            let x = e.at_us as f64 / 1000.0 - origin;
            if x >= from - origin && x <= to - origin {
                chart.draw_series(LineSeries::new(
                    vec![(x, 0.0), (x, ymax)],
                    BLACK.mix(0.4).stroke_width(1),
                ))?;
                chart.draw_series(std::iter::once(Text::new(
                    e.name.clone(),
                    (x, ymax * 0.97),
                    ("sans-serif", 12),
                )))?;
            }
        }
    }
    for (i, r) in reports.iter().enumerate() {
        let (ok_c, fail_c) = COLORS[i % COLORS.len()];
        let pts = |f: &dyn Fn(&super::report::Bin) -> u32| -> Vec<(f64, f64)> {
            r.timeline
                .iter()
                .filter(|b| b.t_ms >= from && b.t_ms <= to)
                .map(|b| (b.t_ms - origin, f(b) as f64))
                .collect()
        };
        chart
            .draw_series(LineSeries::new(pts(&|b| b.ok), ok_c.stroke_width(2)))?
            .label(format!("{}: answered", r.label))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], ok_c.stroke_width(2))
            });
        chart
            .draw_series(LineSeries::new(
                pts(&|b| b.failed_total()),
                fail_c.stroke_width(2),
            ))?
            .label(failures_legend(r))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], fail_c.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;

    let top_nines = reports
        .iter()
        .flat_map(|r| r.percentiles.iter())
        .filter(|(p, _)| *p < 100.0)
        .map(|(p, _)| nines(*p))
        .fold(1.0, f64::max)
        .min(6.0)
        .ceil();
    let lat_max = reports
        .iter()
        .flat_map(|r| r.percentiles.iter())
        .map(|(_, ms)| *ms)
        .fold(1.0, f64::max)
        * 1.5;
    let lat_min = reports
        .iter()
        .flat_map(|r| r.percentiles.iter())
        .map(|(_, ms)| *ms)
        .filter(|v| *v > 0.0)
        .fold(lat_max, f64::min)
        .max(0.01)
        * 0.7;
    let mut chart = ChartBuilder::on(&bottom)
        .caption(
            "latency percentiles of answered requests (from the intended send time)",
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..top_nines, (lat_min..lat_max).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(top_nines as usize + 1)
        .x_label_formatter(&|x| percentile_label(*x))
        .x_desc("percentile")
        .y_desc("ms")
        .draw()?;
    for (i, r) in reports.iter().enumerate() {
        let (c, _) = COLORS[i % COLORS.len()];
        let pts: Vec<(f64, f64)> = r
            .percentiles
            .iter()
            .map(|(p, ms)| (nines(*p).min(top_nines), ms.max(lat_min)))
            .collect();
        let s = &r.summary;
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))?
            .label(format!(
                "{}: p50 {:.2} / p99 {:.2} / p99.9 {:.2} / max {:.1} ms",
                r.label, s.p50_ms, s.p99_ms, s.p999_ms, s.max_ms
            ))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_axis() {
        assert_eq!(nines(0.0), 0.0);
        assert!((nines(99.0) - 2.0).abs() < 1e-9);
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(1.0), "90%");
        assert_eq!(percentile_label(3.0), "99.9%");
        assert!(nines(100.0).is_finite());
    }
}
