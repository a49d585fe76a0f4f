//! Self-contained HTML reports: text, tables and SVG plots embedded inline (plotters' SVG
//! backend, which writes `<text>` elements and needs no system fonts).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use plotters::prelude::*;

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
}

impl Report {
    pub fn new(title: &str) -> Self {
        Self {
            title: title.to_string(),
            body: String::new(),
        }
    }

    pub fn heading(&mut self, text: &str) {
        let _ = writeln!(self.body, "<h2>{}</h2>", escape(text));
    }

    pub fn para(&mut self, text: &str) {
        let _ = writeln!(self.body, "<p>{}</p>", escape(text));
    }

    /// Preformatted text (a privacy statement, a sample).
    pub fn pre(&mut self, text: &str) {
        let _ = writeln!(self.body, "<pre>{}</pre>", escape(text));
    }

    pub fn table(&mut self, headers: &[&str], rows: &[Vec<String>]) {
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
</style></head><body><h1>{t}</h1>\n{b}</body></html>\n",
            t = escape(&self.title),
            b = self.body
        )
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        crate::rundir::write_atomic(path, self.html().as_bytes())
    }
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

/// A line or scatter chart as an SVG string. Non-finite points are skipped.
pub fn chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (720, 400)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let (x0, x1) = range_of(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
        let (y0, y1) = range_of(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
        let Ok(mut c) = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, y0..y1)
        else {
            return out_of(title);
        };
        let _ = c.configure_mesh().x_desc(x_label).y_desc(y_label).draw();
        for (i, s) in series.iter().enumerate() {
            let col = PALETTE[i % PALETTE.len()];
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .collect();
            if !s.scatter
                && let Ok(a) = c.draw_series(LineSeries::new(pts.clone(), col.stroke_width(2)))
            {
                a.label(s.name.clone()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], col.stroke_width(2))
                });
            }
            if s.markers
                && let Ok(a) = c.draw_series(pts.iter().map(|&p| Circle::new(p, 3, col.filled())))
                && s.scatter
            {
                a.label(s.name.clone())
                    .legend(move |(x, y)| Circle::new((x + 9, y), 3, col.filled()));
            }
        }
        let _ = c
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw();
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
        let root = SVGBackend::with_string(&mut out, (720, 400)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let (lo, hi) = range_of(vals.iter().copied().chain(marks.iter().map(|m| m.1)));
        let bins = bins.max(1);
        let w = (hi - lo) / bins as f64;
        let mut counts = vec![0usize; bins];
        for v in &vals {
            let k = (((v - lo) / w) as usize).min(bins - 1);
            counts[k] += 1;
        }
        let ymax = counts.iter().copied().max().unwrap_or(1).max(1) as f64 * 1.1;
        let Ok(mut c) = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(lo..hi, 0f64..ymax)
        else {
            return out_of(title);
        };
        let _ = c.configure_mesh().x_desc(x_label).y_desc("count").draw();
        let _ = c.draw_series(counts.iter().enumerate().map(|(k, &n)| {
            let x0 = lo + k as f64 * w;
            Rectangle::new(
                [(x0, 0.0), (x0 + w, n as f64)],
                PALETTE[0].mix(0.5).filled(),
            )
        }));
        if let Some((name, f)) = curve {
            let scale = vals.len() as f64 * w;
            let pts: Vec<(f64, f64)> = (0..=200)
                .map(|i| lo + (hi - lo) * i as f64 / 200.0)
                .map(|x| (x, f(x) * scale))
                .filter(|p| p.1.is_finite())
                .collect();
            if let Ok(a) = c.draw_series(LineSeries::new(pts, PALETTE[1].stroke_width(2))) {
                a.label(name.to_string()).legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], PALETTE[1].stroke_width(2))
                });
            }
        }
        for (i, (name, x)) in marks.iter().enumerate() {
            let col = PALETTE[(i + 2) % PALETTE.len()];
            if let Ok(a) = c.draw_series(LineSeries::new(
                vec![(*x, 0.0), (*x, ymax)],
                col.stroke_width(1),
            )) {
                a.label(name.clone()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], col.stroke_width(1))
                });
            }
        }
        let _ = c
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw();
        let _ = root.present();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
