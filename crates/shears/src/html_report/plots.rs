//! SVG charts for the HTML report, drawn by plotters into strings (no fonts or files needed).

use plotters::prelude::*;

/// Series colours (colour-blind-safe tableau order).
const COLORS: &[RGBColor] = &[
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// One point: x, y and the y error bar's half-height (0 for none).
pub type Point = (f64, f64, f64);

/// A named line of points.
pub struct Series {
    pub name: String,
    pub points: Vec<Point>,
}

/// A chart to draw.
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    /// A logarithmic x axis (compression ratios).
    pub log_x: bool,
    pub series: &'a [Series],
}

/// The colour of series `i`, as CSS.
pub fn css_color(i: usize) -> String {
    let RGBColor(r, g, b) = COLORS[i % COLORS.len()];
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// An HTML legend of `series` (beside the SVG rather than inside it, so that it never covers
/// a point); empty series are left out.
pub fn legend(series: &[Series]) -> String {
    let mut out = String::from("<ul class=\"legend\">");
    for (i, s) in series.iter().enumerate() {
        if s.points
            .iter()
            .all(|p| !(p.0.is_finite() && p.1.is_finite()))
        {
            continue;
        }
        out.push_str(&format!(
            "<li><span class=\"swatch\" style=\"background:{}\"></span>{}</li>",
            css_color(i),
            super::escape(&s.name)
        ));
    }
    out.push_str("</ul>");
    out
}

/// Draws `chart` as an SVG document, or `None` when no series has a finite point.
pub fn svg(chart: &Chart<'_>) -> Option<String> {
    let finite = |p: &&Point| p.0.is_finite() && p.1.is_finite() && (!chart.log_x || p.0 > 0.0);
    let pts: Vec<&Point> = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(finite)
        .collect();
    if pts.is_empty() {
        return None;
    }
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for p in &pts {
        x0 = x0.min(p.0);
        x1 = x1.max(p.0);
        y0 = y0.min(p.1 - p.2);
        y1 = y1.max(p.1 + p.2);
    }
    let dy = ((y1 - y0) * 0.1).max(1e-3);
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (700, 400)).into_drawing_area();
        root.fill(&WHITE).ok()?;
        let caption = (chart.title, ("sans-serif", 20));
        // A log axis only over a decade or more: plotters labels it at powers of ten.
        if chart.log_x && x1 / x0 >= 10.0 {
            let (lo, hi) = (x0 / 1.3, x1 * 1.3);
            let mut c = ChartBuilder::on(&root)
                .caption(caption.0, caption.1)
                .margin(12)
                .x_label_area_size(44)
                .y_label_area_size(64)
                .build_cartesian_2d((lo..hi).log_scale(), (y0 - dy)..(y1 + dy))
                .ok()?;
            draw(&mut c, chart, finite).ok()?;
        } else {
            let dx = ((x1 - x0) * 0.06).max(x1.abs() * 0.05).max(1e-3);
            let mut c = ChartBuilder::on(&root)
                .caption(caption.0, caption.1)
                .margin(12)
                .x_label_area_size(44)
                .y_label_area_size(64)
                .build_cartesian_2d((x0 - dx)..(x1 + dx), (y0 - dy)..(y1 + dy))
                .ok()?;
            draw(&mut c, chart, finite).ok()?;
        }
        root.present().ok()?;
    }
    Some(out)
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw<'b, X>(
    c: &mut ChartContext<
        'b,
        SVGBackend<'b>,
        Cartesian2d<X, plotters::coord::types::RangedCoordf64>,
    >,
    chart: &Chart<'_>,
    finite: impl Fn(&&Point) -> bool,
) -> DrawResult
where
    X: Ranged<ValueType = f64> + plotters::coord::ranged1d::ValueFormatter<f64>,
{
    c.configure_mesh()
        .x_desc(chart.x_label)
        .y_desc(chart.y_label)
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for (i, s) in chart.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut pts: Vec<Point> = s.points.iter().filter(|p| finite(p)).copied().collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        if pts.is_empty() {
            continue;
        }
        c.draw_series(LineSeries::new(
            pts.iter().map(|p| (p.0, p.1)),
            color.stroke_width(2),
        ))?;
        c.draw_series(
            pts.iter()
                .map(|p| Circle::new((p.0, p.1), 4, color.filled())),
        )?;
        c.draw_series(
            pts.iter()
                .filter(|p| p.2 > 0.0)
                .map(|p| ErrorBar::new_vertical(p.0, p.1 - p.2, p.1, p.1 + p.2, color, 8)),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_series_with_error_bars_and_skips_empty_charts() {
        let series = vec![
            Series {
                name: "a".into(),
                points: vec![(1.0, 90.0, 1.0), (10.0, 80.0, 0.0)],
            },
            Series {
                name: "b".into(),
                points: vec![(2.0, f64::NAN, 0.0), (3.0, 85.0, 2.0)],
            },
        ];
        let chart = Chart {
            title: "accuracy",
            x_label: "x",
            y_label: "y",
            log_x: true,
            series: &series,
        };
        let s = svg(&chart).unwrap();
        assert!(s.starts_with("<svg"), "{}", &s[..40]);
        assert!(s.contains("accuracy"));
        let l = legend(&series);
        assert!(
            l.contains("#1f77b4\"></span>a<") && l.contains("#d62728\"></span>b<"),
            "{l}"
        );
        let empty = [Series {
            name: "c".into(),
            points: vec![(f64::NAN, 1.0, 0.0)],
        }];
        assert!(
            svg(&Chart {
                series: &empty,
                ..chart
            })
            .is_none()
        );
    }
}
