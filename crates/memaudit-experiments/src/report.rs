//! Self-contained HTML reports: text, tables and SVG plots embedded inline (plotters' SVG
//! backend, which writes `<text>` elements and needs no system fonts).
//!
//! In the library (it was the CLI's `report` module, which now re-exports it) because the audit
//! pipeline's report stage writes its `report.html` from here.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use crate::error::Result;

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An HTML report under construction.
pub struct Report {
    title: String,
    body: String,
    /// Heading anchors used so far (each `id` is unique).
    ids: Vec<String>,
}

impl Report {
    pub fn new(title: &str) -> Self {
        Self {
            title: title.to_string(),
            body: String::new(),
            ids: Vec::new(),
        }
    }

    /// A section heading with an anchor (`report.html#plain-model-training`) so a section can be
    /// linked to on a long page.
    pub fn heading(&mut self, text: &str) {
        let mut slug = String::new();
        for c in text.chars().flat_map(char::to_lowercase) {
            if c.is_ascii_alphanumeric() {
                slug.push(c);
            } else if !slug.is_empty() && !slug.ends_with('-') {
                slug.push('-');
            }
        }
        let base = slug.trim_end_matches('-').to_string();
        let mut id = base.clone();
        let mut k = 2;
        while self.ids.contains(&id) {
            id = format!("{base}-{k}");
            k += 1;
        }
        self.ids.push(id.clone());
        let _ = writeln!(self.body, "<h2 id=\"{id}\">{}</h2>", escape(text));
    }

    pub fn para(&mut self, text: &str) {
        let _ = writeln!(self.body, "<p>{}</p>", escape(text));
    }

    /// Preformatted text (a privacy statement, a sample).
    pub fn pre(&mut self, text: &str) {
        let _ = writeln!(self.body, "<pre>{}</pre>", escape(text));
    }

    /// A table; one longer than [`TABLE_OPEN_ROWS`] rows is collapsed under a `<details>`
    /// summary (62-row canary tables made a page 14,000 px tall, burying the charts).
    pub fn table(&mut self, headers: &[&str], rows: &[Vec<String>]) {
        let collapse = rows.len() > TABLE_OPEN_ROWS;
        if collapse {
            let _ = write!(
                self.body,
                "<details><summary>Table of {} rows ({}): show</summary>",
                rows.len(),
                escape(&headers.join(", "))
            );
        }
        let mut s = String::from("<table><tr>");
        for h in headers {
            let _ = write!(s, "<th>{}</th>", escape(h));
        }
        s.push_str("</tr>");
        for r in rows {
            s.push_str("<tr>");
            for c in r {
                let _ = write!(s, "<td>{}</td>", escape(c));
            }
            s.push_str("</tr>");
        }
        s.push_str("</table>");
        self.body.push_str(&s);
        if collapse {
            self.body.push_str("</details>");
        }
        self.body.push('\n');
    }

    /// Embed an SVG (produced by the functions below or another crate).
    pub fn svg(&mut self, svg: &str) {
        let _ = writeln!(self.body, "<div class=\"plot\">{svg}</div>");
    }

    pub fn html(&self) -> String {
        format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title><style>\
body{{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222;line-height:1.4}}\
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}\
th{{background:#f3f3f3}}pre{{background:#f7f7f7;padding:1em;white-space:pre-wrap}}.plot{{margin:1em 0}}\
.plot svg{{max-width:100%;height:auto}}summary{{cursor:pointer;color:#1f4e79;margin:0.5em 0}}\
</style></head><body><h1>{t}</h1>\n{b}</body></html>\n",
            t = escape(&self.title),
            b = self.body
        )
    }

    /// Write the page atomically (a temporary file renamed into place).
    pub fn write(&self, path: &Path) -> Result<()> {
        Ok(memaudit_data::write_atomic(path, self.html().as_bytes())?)
    }
}

/// Tables up to this many rows are shown open; longer ones start collapsed.
pub const TABLE_OPEN_ROWS: usize = 15;

/// Chart size in px. The SVG is shown at this size (scaled down only on narrow screens), so the
/// font sizes below are the sizes on screen at 100% zoom.
const CHART_SIZE: (u32, u32) = (900, 420);
/// Font sizes as plotters takes them: its SVG backend writes font-size = size / 1.24, so 16
/// gives 12.9 px tick labels, the least that reads well at 100% zoom (they were about 9 px).
const TICK_FONT_PX: u32 = 16;
/// Axis titles and legend entries (13.7 px on screen).
const LABEL_FONT_PX: u32 = 17;
/// Chart titles (17.7 px).
const CAPTION_FONT_PX: u32 = 22;

/// How a legend entry is drawn.
enum Swatch {
    Line(RGBColor, u32),
    Dot(RGBColor),
}

/// Split the chart's canvas into the plot and a legend column on its right, so that the legend
/// never covers data (inside the plot it hid the last epochs of several lines). Draws the
/// legend; returns the area left for the plot.
fn with_legend<'a>(
    root: &DrawingArea<SVGBackend<'a>, plotters::coord::Shift>,
    entries: &[(String, Swatch)],
) -> DrawingArea<SVGBackend<'a>, plotters::coord::Shift> {
    if entries.is_empty() {
        return root.clone();
    }
    // About 0.6 em per character of a sans-serif font (the on-screen size: plotters' size /
    // 1.24), plus the swatch.
    let char_px = |n: u32| n * LABEL_FONT_PX * 6 * 100 / (10 * 124);
    let longest = entries
        .iter()
        .map(|e| e.0.chars().count())
        .max()
        .unwrap_or(0) as u32;
    let width = (40 + char_px(longest)).min(CHART_SIZE.0 / 3);
    let (plot, legend) = root.split_horizontally(CHART_SIZE.0 - width);
    let style = ("sans-serif", LABEL_FONT_PX).into_font().color(&BLACK);
    for (i, (name, swatch)) in entries.iter().enumerate() {
        let y = 50 + i as i32 * (LABEL_FONT_PX as i32 + 8);
        let _ = match swatch {
            Swatch::Line(col, w) => legend.draw(&PathElement::new(
                vec![(6, y), (26, y)],
                col.stroke_width(*w),
            )),
            Swatch::Dot(col) => legend.draw(&Circle::new((16, y), 4, col.filled())),
        };
        // Names too long for the column are cut with an ellipsis rather than overflow.
        let max_chars = (width.saturating_sub(40) / char_px(1).max(1)) as usize;
        let shown: String = if name.chars().count() > max_chars && max_chars > 1 {
            name.chars().take(max_chars - 1).chain(['…']).collect()
        } else {
            name.clone()
        };
        let _ = legend.draw(&Text::new(
            shown,
            (32, y - LABEL_FONT_PX as i32 / 2 - 1),
            style.clone(),
        ));
    }
    plot
}

/// One series of a chart.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Draw markers as well as lines.
    pub markers: bool,
    /// Markers only (a scatter plot).
    pub scatter: bool,
}

impl Series {
    pub fn line(name: &str, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.into(),
            points,
            markers: true,
            scatter: false,
        }
    }
    pub fn scatter(name: &str, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.into(),
            points,
            markers: true,
            scatter: true,
        }
    }
}

fn range_of(vals: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in vals.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        let pad = lo.abs().max(1.0) * 0.05;
        return (lo - pad, hi + pad);
    }
    let pad = (hi - lo) * 0.05;
    (lo - pad, hi + pad)
}

/// A line or scatter chart as an SVG string, its legend to the right of the plot. Non-finite
/// points are skipped.
pub fn chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, CHART_SIZE).into_drawing_area();
        let _ = root.fill(&WHITE);
        let entries: Vec<(String, Swatch)> = series
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let col = PALETTE[i % PALETTE.len()];
                let swatch = if s.scatter {
                    Swatch::Dot(col)
                } else {
                    Swatch::Line(col, 2)
                };
                (s.name.clone(), swatch)
            })
            .collect();
        let area = with_legend(&root, &entries);
        let (x0, x1) = range_of(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
        let (y0, y1) = range_of(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
        let Ok(mut c) = ChartBuilder::on(&area)
            .caption(title, ("sans-serif", CAPTION_FONT_PX))
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(x0..x1, y0..y1)
        else {
            return out_of(title);
        };
        let _ = c
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .label_style(("sans-serif", TICK_FONT_PX))
            .axis_desc_style(("sans-serif", LABEL_FONT_PX))
            .draw();
        for (i, s) in series.iter().enumerate() {
            let col = PALETTE[i % PALETTE.len()];
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .collect();
            if !s.scatter {
                let _ = c.draw_series(LineSeries::new(pts.clone(), col.stroke_width(2)));
            }
            if s.markers {
                let _ = c.draw_series(pts.iter().map(|&p| Circle::new(p, 3, col.filled())));
            }
        }
        let _ = root.present();
    }
    out
}

fn out_of(title: &str) -> String {
    format!("<p>(plot {} could not be drawn)</p>", escape(title))
}

/// A histogram of `values` with an optional density curve (scaled to the histogram's counts).
pub fn histogram(
    title: &str,
    x_label: &str,
    values: &[f64],
    bins: usize,
    curve: Option<(&str, &dyn Fn(f64) -> f64)>,
    marks: &[(String, f64)],
) -> String {
    let vals: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, CHART_SIZE).into_drawing_area();
        let _ = root.fill(&WHITE);
        let mut entries: Vec<(String, Swatch)> = Vec::new();
        if let Some((name, _)) = &curve {
            entries.push((name.to_string(), Swatch::Line(PALETTE[1], 2)));
        }
        for (i, (name, _)) in marks.iter().enumerate() {
            entries.push((
                name.clone(),
                Swatch::Line(PALETTE[(i + 2) % PALETTE.len()], 1),
            ));
        }
        let area = with_legend(&root, &entries);
        let (lo, hi) = range_of(vals.iter().copied().chain(marks.iter().map(|m| m.1)));
        let bins = bins.max(1);
        let w = (hi - lo) / bins as f64;
        let mut counts = vec![0usize; bins];
        for v in &vals {
            let k = (((v - lo) / w) as usize).min(bins - 1);
            counts[k] += 1;
        }
        let ymax = counts.iter().copied().max().unwrap_or(1).max(1) as f64 * 1.1;
        let Ok(mut c) = ChartBuilder::on(&area)
            .caption(title, ("sans-serif", CAPTION_FONT_PX))
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(lo..hi, 0f64..ymax)
        else {
            return out_of(title);
        };
        let _ = c
            .configure_mesh()
            .x_desc(x_label)
            .y_desc("count")
            .label_style(("sans-serif", TICK_FONT_PX))
            .axis_desc_style(("sans-serif", LABEL_FONT_PX))
            .draw();
        let _ = c.draw_series(counts.iter().enumerate().map(|(k, &n)| {
            let x0 = lo + k as f64 * w;
            Rectangle::new(
                [(x0, 0.0), (x0 + w, n as f64)],
                PALETTE[0].mix(0.5).filled(),
            )
        }));
        if let Some((_, f)) = curve {
            let scale = vals.len() as f64 * w;
            let pts: Vec<(f64, f64)> = (0..=200)
                .map(|i| lo + (hi - lo) * i as f64 / 200.0)
                .map(|x| (x, f(x) * scale))
                .filter(|p| p.1.is_finite())
                .collect();
            let _ = c.draw_series(LineSeries::new(pts, PALETTE[1].stroke_width(2)));
        }
        for (i, (_, x)) in marks.iter().enumerate() {
            let col = PALETTE[(i + 2) % PALETTE.len()];
            let _ = c.draw_series(LineSeries::new(
                vec![(*x, 0.0), (*x, ymax)],
                col.stroke_width(1),
            ));
        }
        let _ = root.present();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbers after each `attr="` in `svg`.
    fn attr_values(svg: &str, attr: &str) -> Vec<f64> {
        let key = format!("{attr}=\"");
        svg.match_indices(&key)
            .filter_map(|(i, _)| {
                let rest = &svg[i + key.len()..];
                rest[..rest.find('"')?].parse().ok()
            })
            .collect()
    }

    #[test]
    fn legend_sits_right_of_the_data_and_text_is_legible() {
        let svg = chart(
            "loss",
            "epoch",
            "nats",
            &[
                Series::line("train-series", (0..20).map(|i| (i as f64, 1.0)).collect()),
                Series::line("valid-series", (0..20).map(|i| (i as f64, 2.0)).collect()),
            ],
        );
        // Every text at least 12 px on screen (the SVG is shown at its own size).
        let sizes = attr_values(&svg, "font-size");
        assert!(
            !sizes.is_empty() && sizes.iter().all(|&s| s >= 12.0),
            "{sizes:?}"
        );
        // The legend's names start right of every data marker (including the last epoch's).
        let name_at = svg.find("train-series").unwrap();
        let legend_x = attr_values(&svg[..name_at], "x").last().copied().unwrap();
        let markers = attr_values(&svg, "cx");
        assert_eq!(markers.len(), 40);
        assert!(
            markers.iter().all(|&cx| cx < legend_x),
            "{legend_x} {markers:?}"
        );
    }

    #[test]
    fn long_tables_are_collapsed_short_ones_are_not() {
        let row = |i: usize| vec![i.to_string(), "x".to_string()];
        let mut r = Report::new("t");
        r.table(
            &["k", "v"],
            &(0..TABLE_OPEN_ROWS).map(row).collect::<Vec<_>>(),
        );
        assert!(!r.html().contains("<details>"));
        r.table(
            &["canary", "exposure"],
            &(0..62).map(row).collect::<Vec<_>>(),
        );
        r.heading("Plain model: every canary");
        r.heading("Plain model: every canary");
        let html = r.html();
        assert!(html.contains("<h2 id=\"plain-model-every-canary\">"));
        assert!(html.contains("<h2 id=\"plain-model-every-canary-2\">"));
        assert_eq!(html.matches("<details>").count(), 1);
        assert!(html.contains("<summary>Table of 62 rows (canary, exposure): show</summary>"));
        assert!(html.contains("</table></details>"));
    }

    #[test]
    fn report_is_self_contained_and_escaped() {
        let mut r = Report::new("a <b> & c");
        r.para("x < y");
        r.table(&["k", "v"], &[vec!["eps".into(), "1.0".into()]]);
        r.svg(&chart(
            "loss",
            "epoch",
            "nats",
            &[Series::line(
                "train",
                vec![(1.0, 2.0), (2.0, f64::NAN), (3.0, 1.0)],
            )],
        ));
        r.svg(&histogram(
            "h",
            "x",
            &[1.0, 2.0, 2.5, 3.0],
            4,
            Some(("pdf", &|x: f64| (-x * x).exp())),
            &[("secret".into(), 2.0)],
        ));
        let html = r.html();
        assert!(html.contains("a &lt;b&gt; &amp; c") && html.contains("x &lt; y"));
        assert!(html.contains("<svg") && !html.contains("src=\"http") && !html.contains("<script"));
    }
}
