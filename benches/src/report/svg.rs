//! SVG charts with plotters' SVG backend (text as SVG `<text>`, so no fonts are needed to
//! write them): throughput vs the sweep's levels, and TTFT, TPOT and ITL percentiles vs
//! the levels, one colour per target.

use std::path::{Path, PathBuf};

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;

use super::Report;
use crate::metrics::{Stats, Summary};

const SIZE: (u32, u32) = (900, 520);
/// Matplotlib's tab10, so charts look familiar.
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// How a line is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Dash {
    Solid,
    Long,
    Short,
}

/// One line of a chart.
pub struct Series {
    pub label: String,
    pub color: RGBColor,
    pub dash: Dash,
    pub points: Vec<(f64, f64)>,
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing chart: {e}")
}

/// Tick labels: integers plainly, others with up to 2 decimals.
fn tick(x: f64) -> String {
    if (x - x.round()).abs() < 1e-9 {
        format!("{}", x.round() as i64)
    } else {
        format!("{x:.2}").trim_end_matches('0').to_owned()
    }
}

/// A line chart: title, axes, the sweep's x values (ticks) and its lines.
pub struct Chart<'a> {
    pub title: String,
    pub x_name: &'a str,
    pub y_name: &'a str,
    pub xs: &'a [f64],
    pub series: Vec<Series>,
    /// Small print at the bottom: the machine and the date, so charts are never mixed up.
    pub footer: String,
}

impl Chart<'_> {
    /// Draws the chart into an SVG file. The x axis is logarithmic (ticks at `xs`) when
    /// the values span a factor of 4 or more.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let (xmin, xmax) = self
            .xs
            .iter()
            .fold((f64::INFINITY, 0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        anyhow::ensure!(
            xmin.is_finite() && xmin > 0.0,
            "no finite positive x values"
        );
        let points = self.series.iter().flat_map(|s| s.points.iter());
        let ymax = points.map(|p| p.1).fold(0f64, f64::max);
        let ymax = if ymax > 0.0 { ymax * 1.12 } else { 1.0 };
        let root = SVGBackend::new(path, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (plot, foot) = root.split_vertically(SIZE.1 - 22);
        if xmax / xmin >= 4.0 {
            let x = (xmin / 1.25..xmax * 1.25)
                .log_scale()
                .with_key_points(self.xs.to_vec());
            self.draw(&plot, x, ymax)?;
        } else {
            let pad = ((xmax - xmin) * 0.1).max(xmin * 0.25);
            self.draw(&plot, (xmin - pad).max(0.0)..xmax + pad, ymax)?;
        }
        let small = ("sans-serif", 12)
            .into_font()
            .color(&RGBColor(110, 110, 110));
        foot.draw_text(&self.footer, &small, (12, 4)).map_err(err)?;
        root.present().map_err(err)?;
        Ok(())
    }

    fn draw<X>(&self, area: &DrawingArea<SVGBackend, Shift>, x: X, ymax: f64) -> anyhow::Result<()>
    where
        X: AsRangedCoord<Value = f64>,
        X::CoordDescType: ValueFormatter<f64>,
    {
        let mut chart = ChartBuilder::on(area)
            .caption(&self.title, ("sans-serif", 22))
            .margin(18)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(x, 0f64..ymax)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(self.x_name)
            .y_desc(self.y_name)
            .x_label_formatter(&|x| tick(*x))
            .y_label_formatter(&|y| tick((*y * 100.0).round() / 100.0))
            .label_style(("sans-serif", 14))
            .max_light_lines(2)
            .light_line_style(RGBColor(240, 240, 240))
            .draw()
            .map_err(err)?;
        for s in &self.series {
            let style = s.color.stroke_width(2);
            let pts = s.points.clone();
            let anno = match s.dash {
                Dash::Solid => chart.draw_series(LineSeries::new(pts, style)),
                Dash::Long => chart.draw_series(DashedLineSeries::new(pts, 10, 5, style)),
                Dash::Short => chart.draw_series(DashedLineSeries::new(pts, 3, 4, style)),
            }
            .map_err(err)?;
            let (dash, size) = match s.dash {
                Dash::Solid => (24, 0),
                Dash::Long => (10, 5),
                Dash::Short => (3, 4),
            };
            anno.label(&s.label).legend(move |(x, y)| {
                let line = vec![(x, y), (x + 24, y)];
                DashedPathElement::new(line, dash, size, style)
            });
            let dots = s
                .points
                .iter()
                .map(|&p| Circle::new(p, 4, s.color.filled()));
            chart.draw_series(dots).map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(err)?;
        Ok(())
    }
}

/// Points of one target: (level x, f(summary)) for levels with a finite x and a value.
fn points(report: &Report, target: &str, f: &dyn Fn(&Summary) -> Option<f64>) -> Vec<(f64, f64)> {
    report
        .levels()
        .iter()
        .filter(|l| l.x().is_finite())
        .filter_map(|l| Some((l.x(), f(&report.result(target, l)?.summary)?)))
        .collect()
}

/// Writes throughput.svg, ttft.svg, tpot.svg and itl.svg; nothing when no level has a
/// finite x (e.g. only an unbounded rate).
pub fn write_charts(report: &Report, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let xs: Vec<f64> = report
        .levels()
        .iter()
        .map(|l| l.x())
        .filter(|x| x.is_finite())
        .collect();
    if xs.is_empty() {
        return Ok(vec![]);
    }
    let x_name = report.x_name();
    let multi = report.targets.len() > 1;
    let name = |t: &str, what: &str| {
        if multi {
            format!("{t} {what}")
        } else {
            what.to_owned()
        }
    };
    let mut files = vec![];

    let mut thr = vec![];
    for (i, t) in report.targets.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        thr.push(Series {
            label: name(&t.name, "output tok/s"),
            color,
            dash: Dash::Solid,
            points: points(report, &t.name, &|s| Some(s.output_throughput)),
        });
        thr.push(Series {
            label: name(&t.name, "total tok/s (input + output)"),
            color,
            dash: Dash::Long,
            points: points(report, &t.name, &|s| Some(s.total_token_throughput)),
        });
    }
    let footer = format!(
        "{} · inferd-bench {} · {}",
        report.machine.one_line(),
        report.bench_version,
        report.started_at
    );
    let chart = |title: String, y_name, series| Chart {
        title,
        x_name,
        y_name,
        xs: &xs,
        series,
        footer: footer.clone(),
    };
    let path = dir.join("throughput.svg");
    chart(format!("Token throughput vs {x_name}"), "tokens/s", thr).write(&path)?;
    files.push(path);

    type Pick = fn(&Summary) -> Option<Stats>;
    type Get = fn(&Stats) -> f64;
    let charts: [(&str, &str, Pick); 3] = [
        ("ttft", "Time to first token", |s| s.ttft_ms),
        ("tpot", "Time per output token", |s| s.tpot_ms),
        ("itl", "Inter-token latency", |s| s.itl_ms),
    ];
    for (file, title, pick) in charts {
        let mut lines = vec![];
        for (i, t) in report.targets.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let pcts: [(&str, Dash, Get); 3] = [
                ("p50", Dash::Solid, |s| s.p50),
                ("p90", Dash::Long, |s| s.p90),
                ("p99", Dash::Short, |s| s.p99),
            ];
            for (p, dash, get) in pcts {
                let pts = points(report, &t.name, &|s| pick(s).map(|st| get(&st)));
                lines.push(Series {
                    label: name(&t.name, p),
                    color,
                    dash,
                    points: pts,
                });
            }
        }
        let path = dir.join(format!("{file}.svg"));
        chart(format!("{title} vs {x_name}"), "ms", lines).write(&path)?;
        files.push(path);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_log_chart_with_text() {
        let dir = std::env::temp_dir().join(format!("inferd-bench-svg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.svg");
        let s = Series {
            label: "out tok/s".into(),
            color: PALETTE[0],
            dash: Dash::Long,
            points: vec![(1.0, 10.0), (4.0, 30.0), (16.0, 50.0)],
        };
        let chart = Chart {
            title: "Throughput".into(),
            x_name: "concurrency",
            y_name: "tokens/s",
            xs: &[1.0, 4.0, 16.0],
            series: vec![s],
            footer: "a machine".into(),
        };
        chart.write(&path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("Throughput") && svg.contains("out tok/s"));
        assert!(svg.contains("a machine"));
        assert!(svg.contains("\n16\n"), "tick labels at the levels: {svg}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
