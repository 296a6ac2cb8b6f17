//! A small raster plotting helper for the report: an RGB canvas with rectangles, lines,
//! a 5x7 bitmap font, histogram and line-chart panels, and PNG output (atomic).

use std::path::Path;

use anyhow::{Context, Result};

/// An RGB colour.
pub type Rgb = [u8; 3];

/// Colours used by the report's figures.
pub mod colors {
    use super::Rgb;
    /// Background.
    pub const WHITE: Rgb = [255, 255, 255];
    /// Axes and text.
    pub const BLACK: Rgb = [20, 20, 20];
    /// Grid lines.
    pub const GRID: Rgb = [225, 225, 225];
    /// Histogram bars.
    pub const BAR: Rgb = [110, 130, 160];
    /// Thresholds.
    pub const RED: Rgb = [210, 40, 40];
    /// Baseline series.
    pub const BLUE: Rgb = [40, 90, 200];
    /// Search series.
    pub const ORANGE: Rgb = [235, 130, 20];
    /// Fine-tune series.
    pub const GREEN: Rgb = [30, 150, 60];
}

/// An RGB raster image.
#[derive(Debug, Clone)]
pub struct Canvas {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Row-major RGB bytes.
    pub rgb: Vec<u8>,
}

/// 5x7 glyphs, one byte per row, bit 4 = leftmost column.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        ',' => [0, 0, 0, 0, 0x0C, 0x04, 0x08],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        '+' => [0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        '/' => [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        '=' => [0, 0, 0x1F, 0, 0x1F, 0, 0],
        '_' => [0, 0, 0, 0, 0, 0, 0x1F],
        '|' => [0x04; 7],
        _ => [0; 7],
    }
}

/// Pixel width of `text` at `scale`.
pub fn text_width(text: &str, scale: usize) -> usize {
    text.chars().count() * 6 * scale
}

impl Canvas {
    /// A canvas filled with `bg`.
    pub fn new(width: usize, height: usize, bg: Rgb) -> Self {
        let mut rgb = Vec::with_capacity(width * height * 3);
        for _ in 0..width * height {
            rgb.extend_from_slice(&bg);
        }
        Canvas { width, height, rgb }
    }

    /// Sets one pixel (ignored outside the canvas).
    pub fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let i = (y as usize * self.width + x as usize) * 3;
            self.rgb[i..i + 3].copy_from_slice(&c);
        }
    }

    /// The pixel at `(x, y)`.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn get(&self, x: usize, y: usize) -> Rgb {
        let i = (y * self.width + x) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// Fills the rectangle `[x0, x1) x [y0, y1)`.
    pub fn fill_rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: Rgb) {
        for y in y0.min(y1)..y0.max(y1) {
            for x in x0.min(x1)..x0.max(x1) {
                self.set(x, y, c);
            }
        }
    }

    /// A line of width `thick` (Bresenham, square pen).
    pub fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), thick: i64, c: Rgb) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        let r = thick / 2;
        loop {
            self.fill_rect(x - r, y - r, x - r + thick, y - r + thick, c);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Draws `text` with its top-left corner at `(x, y)`.
    pub fn text(&mut self, x: i64, y: i64, text: &str, scale: usize, c: Rgb) {
        let s = scale as i64;
        for (k, ch) in text.chars().enumerate() {
            let g = glyph(ch);
            let ox = x + k as i64 * 6 * s;
            for (row, bits) in g.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        let px = ox + col * s;
                        let py = y + row as i64 * s;
                        self.fill_rect(px, py, px + s, py + s, c);
                    }
                }
            }
        }
    }

    /// Copies an RGB image (`w x h` bytes) with its top-left corner at `(x, y)`.
    pub fn blit(&mut self, x: usize, y: usize, w: usize, h: usize, rgb: &[u8]) {
        for yy in 0..h {
            for xx in 0..w {
                let i = (yy * w + xx) * 3;
                self.set(
                    (x + xx) as i64,
                    (y + yy) as i64,
                    [rgb[i], rgb[i + 1], rgb[i + 2]],
                );
            }
        }
    }

    /// Encodes as PNG and writes atomically.
    pub fn save_png(&self, path: &Path) -> Result<()> {
        let mut buf = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut buf, self.width as u32, self.height as u32);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc.write_header()?;
            w.write_image_data(&self.rgb)?;
        }
        slimseg_data::write_atomic(path, &buf)
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

/// A plotting area inside a canvas with data ranges.
#[derive(Debug, Clone, Copy)]
pub struct Panel {
    /// Left edge of the plot area.
    pub x: i64,
    /// Top edge of the plot area.
    pub y: i64,
    /// Width of the plot area.
    pub w: i64,
    /// Height of the plot area.
    pub h: i64,
    /// Data range on x.
    pub xr: (f64, f64),
    /// Data range on y.
    pub yr: (f64, f64),
}

/// Compact number for axis labels.
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-2..1e4).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

impl Panel {
    /// Canvas x of data x.
    pub fn px(&self, v: f64) -> i64 {
        let (a, b) = self.xr;
        self.x + (((v - a) / (b - a).max(1e-300)) * self.w as f64).round() as i64
    }

    /// Canvas y of data y.
    pub fn py(&self, v: f64) -> i64 {
        let (a, b) = self.yr;
        self.y + self.h - (((v - a) / (b - a).max(1e-300)) * self.h as f64).round() as i64
    }

    /// Axes, a light grid, tick labels at both ends and the middle, and a title.
    pub fn frame(&self, c: &mut Canvas, title: &str, xlabel: &str) {
        for k in 0..=4 {
            let y = self.y + self.h * k / 4;
            c.line((self.x, y), (self.x + self.w, y), 1, colors::GRID);
        }
        c.line(
            (self.x, self.y),
            (self.x, self.y + self.h),
            1,
            colors::BLACK,
        );
        c.line(
            (self.x, self.y + self.h),
            (self.x + self.w, self.y + self.h),
            1,
            colors::BLACK,
        );
        for k in 0..=2 {
            let v = self.yr.0 + (self.yr.1 - self.yr.0) * k as f64 / 2.0;
            let s = fmt_num(v);
            c.text(
                self.x - 6 - text_width(&s, 1) as i64,
                self.py(v) - 3,
                &s,
                1,
                colors::BLACK,
            );
            let v = self.xr.0 + (self.xr.1 - self.xr.0) * k as f64 / 2.0;
            let s = fmt_num(v);
            c.text(
                self.px(v) - text_width(&s, 1) as i64 / 2,
                self.y + self.h + 6,
                &s,
                1,
                colors::BLACK,
            );
        }
        c.text(self.x, self.y - 22, title, 2, colors::BLACK);
        c.text(
            self.x + self.w / 2 - text_width(xlabel, 1) as i64 / 2,
            self.y + self.h + 20,
            xlabel,
            1,
            colors::BLACK,
        );
    }
}

/// One histogram panel: counts over `[0, hi]` and an optional threshold.
#[derive(Debug, Clone)]
pub struct HistogramPanel {
    /// Title (drawn in capitals).
    pub title: String,
    /// Counts per equal bin over `[lo, hi]`.
    pub counts: Vec<usize>,
    /// Lower end of the binned range.
    pub lo: f64,
    /// Upper end of the binned range.
    pub hi: f64,
    /// A threshold drawn as a vertical red line.
    pub threshold: Option<f64>,
}

/// Counts of `values` in `bins` equal bins over `[lo, hi]` (values outside go to the
/// end bins).
pub fn bin_counts(values: &[f64], lo: f64, hi: f64, bins: usize) -> Vec<usize> {
    let mut h = vec![0usize; bins.max(1)];
    let n = h.len();
    let w = (hi - lo).max(1e-300);
    for &v in values {
        let i = (((v - lo) / w) * n as f64).floor().max(0.0) as usize;
        h[i.min(n - 1)] += 1;
    }
    h
}

/// Histograms side by side, one panel each.
pub fn histograms(panels: &[HistogramPanel]) -> Canvas {
    let (pw, ph) = (360i64, 240i64);
    let n = panels.len().max(1) as i64;
    let mut c = Canvas::new(
        (n * (pw + 90) + 30) as usize,
        (ph + 110) as usize,
        colors::WHITE,
    );
    for (i, p) in panels.iter().enumerate() {
        let max = p.counts.iter().copied().max().unwrap_or(1).max(1) as f64;
        let panel = Panel {
            x: 70 + i as i64 * (pw + 90),
            y: 45,
            w: pw,
            h: ph,
            xr: (p.lo, p.hi),
            yr: (0.0, max),
        };
        panel.frame(&mut c, &p.title, "GATE MAGNITUDE");
        let nb = p.counts.len().max(1);
        for (b, &count) in p.counts.iter().enumerate() {
            let w = p.hi - p.lo;
            let x0 = panel.px(p.lo + w * b as f64 / nb as f64);
            let x1 = panel.px(p.lo + w * (b + 1) as f64 / nb as f64);
            c.fill_rect(
                x0 + 1,
                panel.py(count as f64),
                x1,
                panel.py(0.0),
                colors::BAR,
            );
        }
        if let Some(t) = p.threshold {
            let x = panel.px(t.clamp(p.lo, p.hi));
            c.line((x, panel.y), (x, panel.y + panel.h), 2, colors::RED);
            let label = format!("T={}", fmt_num(t));
            c.text(x + 4, panel.y + 4, &label, 1, colors::RED);
        }
    }
    c
}

/// One series of a line chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Line colour.
    pub color: Rgb,
    /// Points in data coordinates.
    pub points: Vec<(f64, f64)>,
}

/// One line chart: title, x-axis label, series and an optional fixed y range.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Title (drawn in capitals).
    pub title: String,
    /// Label of the x axis.
    pub xlabel: String,
    /// The series.
    pub series: Vec<Series>,
    /// Fixed y range; `None`: fitted to the data.
    pub y_range: Option<(f64, f64)>,
}

/// Line charts side by side, with a legend under each.
pub fn line_charts(charts: &[Chart]) -> Canvas {
    let (pw, ph) = (420i64, 260i64);
    let n = charts.len().max(1) as i64;
    let mut c = Canvas::new(
        (n * (pw + 100) + 30) as usize,
        (ph + 150) as usize,
        colors::WHITE,
    );
    for (i, chart) in charts.iter().enumerate() {
        let (title, xlabel, series) = (&chart.title, &chart.xlabel, &chart.series);
        let pts = series.iter().flat_map(|s| s.points.iter().copied());
        let (mut x0, mut x1, mut y0, mut y1) = (
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
        );
        for (x, y) in pts.filter(|p| p.0.is_finite() && p.1.is_finite()) {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        if !x0.is_finite() {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        let pad = ((y1 - y0) * 0.05).max(1e-6);
        let panel = Panel {
            x: 80 + i as i64 * (pw + 100),
            y: 45,
            w: pw,
            h: ph,
            xr: (x0, x1),
            yr: chart.y_range.unwrap_or((
                (y0 - pad).max(if y0 >= 0.0 { 0.0 } else { f64::NEG_INFINITY }),
                y1 + pad,
            )),
        };
        panel.frame(&mut c, title, xlabel);
        for (k, s) in series.iter().enumerate() {
            let pts: Vec<(i64, i64)> = s
                .points
                .iter()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .map(|&(x, y)| (panel.px(x), panel.py(y)))
                .collect();
            for w in pts.windows(2) {
                c.line(w[0], w[1], 2, s.color);
            }
            for &(x, y) in &pts {
                c.fill_rect(x - 2, y - 2, x + 3, y + 3, s.color);
            }
            let ly = panel.y + panel.h + 40 + 14 * k as i64;
            c.fill_rect(panel.x, ly, panel.x + 20, ly + 7, s.color);
            c.text(panel.x + 28, ly, &s.label, 1, colors::BLACK);
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_lines_touch_the_expected_pixels() {
        let mut c = Canvas::new(40, 20, colors::WHITE);
        c.text(0, 0, "1", 1, colors::BLACK);
        // '1' has its stem in column 2 on every row but the first.
        assert_eq!(c.get(2, 3), colors::BLACK);
        assert_eq!(c.get(0, 3), colors::WHITE);
        c.line((0, 15), (39, 15), 1, colors::RED);
        assert!((0..40).all(|x| c.get(x, 15) == colors::RED));
    }

    #[test]
    fn histogram_bars_are_proportional_to_counts() {
        let c = histograms(&[HistogramPanel {
            title: "T".into(),
            counts: vec![10, 5],
            lo: 0.0,
            hi: 1.0,
            threshold: Some(0.5),
        }]);
        let bar = |x: usize| {
            (0..c.height)
                .filter(|&y| c.get(x, y) == colors::BAR)
                .count()
        };
        // Panel x from 70, width 360: first bin centre at 160, second at 340.
        let (a, b) = (bar(160), bar(340));
        assert!(
            a > 0 && (a as f64 / b as f64 - 2.0).abs() < 0.05,
            "{a} vs {b}"
        );
    }

    #[test]
    fn bins_cover_the_range_with_clamped_ends() {
        assert_eq!(
            bin_counts(&[0.0, 0.49, 0.5, 0.99, 1.0, 7.0, -1.0], 0.0, 1.0, 2),
            vec![3, 4]
        );
        assert_eq!(bin_counts(&[0.6, 0.65, 0.7], 0.6, 0.7, 2), vec![1, 2]);
    }

    #[test]
    fn png_roundtrip_keeps_size() {
        let dir = std::env::temp_dir().join(format!("slimseg-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.png");
        Canvas::new(7, 5, colors::BLUE).save_png(&path).unwrap();
        let dec = png::Decoder::new(std::fs::File::open(&path).unwrap());
        let reader = dec.read_info().unwrap();
        assert_eq!((reader.info().width, reader.info().height), (7, 5));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
