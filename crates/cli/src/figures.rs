//! The report's figures, drawn with `plotters` into an RGB buffer and written as PNG
//! (atomically) with the `png` crate.
//!
//! Text is set in an embedded ASCII subset of DejaVu Sans (`assets/`, 11 KB, its licence
//! beside it), registered with plotters' `ab_glyph` backend: no system font is looked up,
//! so CI and a fresh machine render the same pixels.

use std::ops::Range;
use std::path::Path;
use std::sync::Once;

use anyhow::{Context, Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;

/// The embedded font (DejaVu Sans, printable ASCII and a few symbols).
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans-subset.ttf");
/// The family name the figures ask for.
const FAMILY: &str = "sans-serif";

/// Colours of the figures' series.
pub mod colors {
    use plotters::style::RGBColor;
    /// Axes and text.
    pub const INK: RGBColor = RGBColor(20, 20, 20);
    /// Pruned gates and the full model.
    pub const GREY: RGBColor = RGBColor(150, 150, 150);
    /// Thresholds.
    pub const RED: RGBColor = RGBColor(210, 40, 40);
    /// Baseline and learned series.
    pub const BLUE: RGBColor = RGBColor(40, 90, 200);
    /// Search and uniform series.
    pub const ORANGE: RGBColor = RGBColor(235, 130, 20);
    /// Fine-tuning.
    pub const GREEN: RGBColor = RGBColor(30, 150, 60);
}

fn font_once() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are compiled in; a failure here is a broken build, caught by the tests.
        if plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_err() {
            panic!("the embedded font assets/DejaVuSans-subset.ttf does not parse");
        }
    });
}

fn font(size: u32) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(&colors::INK)
}

/// An RGB raster figure.
#[derive(Debug, Clone)]
pub struct Figure {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Row-major RGB bytes.
    pub rgb: Vec<u8>,
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

impl Figure {
    /// A `width x height` figure on `background`, drawn by `draw`.
    fn draw(
        width: u32,
        height: u32,
        background: Vec<u8>,
        draw: impl FnOnce(&Area<'_>) -> Result<()>,
    ) -> Result<Self> {
        font_once();
        let mut rgb = background;
        {
            let area = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
            draw(&area)?;
            area.present()
                .map_err(|e| anyhow!("drawing a figure: {e}"))?;
        }
        Ok(Self { width, height, rgb })
    }

    /// A white `width x height` figure drawn by `draw`.
    fn white(width: u32, height: u32, draw: impl FnOnce(&Area<'_>) -> Result<()>) -> Result<Self> {
        Self::draw(
            width,
            height,
            vec![255; (width * height * 3) as usize],
            draw,
        )
    }

    /// Encodes as PNG and writes atomically.
    pub fn save_png(&self, path: &Path) -> Result<()> {
        let mut buf = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut buf, self.width, self.height);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc.write_header()?;
            w.write_image_data(&self.rgb)?;
        }
        slimseg_data::write_atomic(path, &buf)
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

/// Plotters' errors carry the backend's lifetime; the report needs owned ones.
fn de<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing a figure: {e}")
}

/// `lo..hi` widened by `pad` of its span on both sides (and made non-empty).
fn padded(lo: f64, hi: f64, pad: f64) -> Range<f64> {
    let span = (hi - lo).abs().max(hi.abs() * 1e-3).max(1e-9);
    (lo - span * pad)..(hi + span * pad)
}

/// Axis tick text with as many decimals as the axis' span needs.
fn tick(span: f64) -> impl Fn(&f64) -> String {
    let decimals = if span >= 20.0 {
        0
    } else {
        (1.0 - span.log10().floor()).clamp(0.0, 6.0) as usize
    };
    move |v: &f64| format!("{v:.decimals$}")
}

/// One histogram of gate magnitudes and the selection's threshold.
#[derive(Debug, Clone)]
pub struct GatePanel {
    /// The dimension ("attention head dims", "MLP units", "tokens").
    pub name: String,
    /// The gates' magnitudes.
    pub magnitudes: Vec<f64>,
    /// The threshold: gates at or above it are kept.
    pub threshold: Option<f64>,
}

/// Gate histograms side by side on a log count axis, bins at or above the threshold
/// in blue, below in grey, the threshold as a red line with its value and the kept count.
pub fn gates(panels: &[GatePanel]) -> Result<Figure> {
    let (pw, ph) = (440u32, 330u32);
    let n = panels.len().max(1) as u32;
    Figure::white(pw * n, ph, |root| {
        for (panel, area) in panels.iter().zip(root.split_evenly((1, n as usize))) {
            gate_panel(panel, &area)?;
        }
        Ok(())
    })
}

fn gate_panel(p: &GatePanel, area: &Area<'_>) -> Result<()> {
    const BINS: usize = 40;
    let max = p.magnitudes.iter().copied().fold(0.0, f64::max);
    let min = p.magnitudes.iter().copied().fold(max, f64::min);
    let hi = max.max(p.threshold.unwrap_or(0.0)).max(1e-6) * 1.03;
    // Gates that barely moved cluster far from 0: zoom onto their range.
    let lo = if min > 0.5 * max {
        (min - (max - min) * 0.05 - max * 1e-3).max(0.0)
    } else {
        0.0
    };
    let w = (hi - lo) / BINS as f64;
    let mut counts = [0usize; BINS];
    for &v in &p.magnitudes {
        counts[(((v - lo) / w).floor().max(0.0) as usize).min(BINS - 1)] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let kept = p
        .threshold
        .map(|t| p.magnitudes.iter().filter(|&&v| v >= t).count());
    let caption = match kept {
        Some(k) => format!("{}: {k} of {} kept", p.name, p.magnitudes.len()),
        None => format!("{}: {} gates", p.name, p.magnitudes.len()),
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, font(17))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(52)
        .build_cartesian_2d(lo..hi, (0.7..top * 2.5).log_scale())
        .map_err(de)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("|gate|")
        .y_desc("gates per bin (log)")
        .x_labels(5)
        .x_label_formatter(&tick(hi - lo))
        .y_label_formatter(&|v: &f64| format!("{v:.0}"))
        .label_style(font(13))
        .axis_desc_style(font(14))
        .draw()
        .map_err(de)?;
    chart
        .draw_series(
            counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(i, &c)| {
                    let x0 = lo + i as f64 * w;
                    let colour = match p.threshold {
                        Some(t) if x0 + w <= t => colors::GREY,
                        _ => colors::BLUE,
                    };
                    Rectangle::new([(x0, 0.7), (x0 + w * 0.92, c as f64)], colour.filled())
                }),
        )
        .map_err(de)?;
    if let Some(t) = p.threshold {
        chart
            .draw_series(LineSeries::new(
                [(t, 0.7), (t, top * 2.5)],
                colors::RED.stroke_width(2),
            ))
            .map_err(de)?;
        let right = t < lo + (hi - lo) * 0.6;
        let label = format!("threshold {}", tick((t.abs() * 10.0).max(1e-6))(&t));
        let style = font(13)
            .color(&colors::RED)
            .pos(plotters::style::text_anchor::Pos::new(
                if right {
                    plotters::style::text_anchor::HPos::Left
                } else {
                    plotters::style::text_anchor::HPos::Right
                },
                plotters::style::text_anchor::VPos::Top,
            ));
        let x = if right {
            t + (hi - lo) * 0.01
        } else {
            t - (hi - lo) * 0.01
        };
        chart
            .draw_series([Text::new(label, (x, top * 2.2), style)])
            .map_err(de)?;
    }
    Ok(())
}

/// One training stage's curve: `(epoch of the whole sequence, value)` points.
#[derive(Debug, Clone)]
pub struct Curve {
    /// Legend label.
    pub label: String,
    /// Line colour.
    pub color: RGBColor,
    /// Loss per epoch.
    pub loss: Vec<(f64, f64)>,
    /// Validation Dice per validated epoch (0..1).
    pub dice: Vec<(f64, f64)>,
}

/// Loss and validation Dice per epoch, stages in sequence, and the validation Dice of
/// the later stages (from a few epochs before the second) on an axis zoomed to them, where
/// their differences are visible.
pub fn curves(curves: &[Curve]) -> Result<Figure> {
    let last = curves
        .iter()
        .flat_map(|c| c.loss.iter().chain(&c.dice))
        .map(|p| p.0)
        .fold(1.0, f64::max);
    let end = (last + 1.0).ceil();
    let zoom_from = match curves
        .get(1)
        .and_then(|c| c.loss.first().or(c.dice.first()))
    {
        Some(p) => (p.0 - 5.0).max(0.0).floor(),
        None => (end * 2.0 / 3.0).floor(),
    };
    let panels: [(&str, &str, bool, f64); 3] = [
        ("segmentation loss", "loss", false, 0.0),
        ("validation Dice", "mean Dice", true, 0.0),
        (
            "validation Dice, later stages",
            "mean Dice",
            true,
            zoom_from,
        ),
    ];
    Figure::white(1380, 380, |root| {
        for (k, (area, (title, ydesc, dice, from))) in
            root.split_evenly((1, 3)).iter().zip(panels).enumerate()
        {
            let pick = |c: &Curve| -> Vec<(f64, f64)> {
                let pts = if dice { &c.dice } else { &c.loss };
                pts.iter().copied().filter(|p| p.0 >= from).collect()
            };
            let vals: Vec<f64> = curves.iter().flat_map(&pick).map(|p| p.1).collect();
            let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let yr = if lo.is_finite() {
                padded(lo, hi, 0.08)
            } else {
                0.0..1.0
            };
            let yr = match dice {
                true => yr.start.max(0.0)..yr.end.min(1.0),
                false => yr.start.max(0.0)..yr.end,
            };
            let mut chart = ChartBuilder::on(area)
                .caption(title, font(17))
                .margin(12)
                .x_label_area_size(42)
                .y_label_area_size(58)
                .build_cartesian_2d(from..end, yr.clone())
                .map_err(de)?;
            chart
                .configure_mesh()
                .x_desc("epoch (stages in sequence)")
                .y_desc(ydesc)
                .x_labels(8)
                .x_label_formatter(&|v: &f64| format!("{v:.0}"))
                .y_label_formatter(&tick(yr.end - yr.start))
                .label_style(font(13))
                .axis_desc_style(font(14))
                .draw()
                .map_err(de)?;
            for c in curves {
                let pts = pick(c);
                if pts.is_empty() {
                    continue;
                }
                let colour = c.color;
                chart
                    .draw_series(LineSeries::new(pts.iter().copied(), colour.stroke_width(2)))
                    .map_err(de)?
                    .label(c.label.clone())
                    .legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2))
                    });
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                    .map_err(de)?;
            }
            chart
                .configure_series_labels()
                .label_font(font(13))
                .background_style(WHITE.mix(0.85))
                .border_style(colors::GREY)
                .position(match k {
                    0 => SeriesLabelPosition::UpperRight,
                    _ => SeriesLabelPosition::LowerRight,
                })
                .draw()
                .map_err(de)?;
        }
        Ok(())
    })
}

/// One point of a Pareto plot: a cost, a Dice with its interval, and a label.
#[derive(Debug, Clone)]
pub struct ParetoPoint {
    /// Cost on the x axis (MACs in M, or latency in ms).
    pub cost: f64,
    /// Mean Dice in %.
    pub dice: f64,
    /// The 95% interval of the mean Dice in %.
    pub ci: (f64, f64),
    /// A short label ("0.7").
    pub label: String,
}

/// Dice against cost: learned and uniform subnets (either may be empty) with their 95%
/// intervals, the full model, and a dashed line at 70% of the full model's cost labelled
/// `mark`.
pub fn pareto(
    xdesc: &str,
    learned: &[ParetoPoint],
    uniform: &[ParetoPoint],
    full: &ParetoPoint,
    mark: &str,
) -> Result<Figure> {
    let all: Vec<&ParetoPoint> = learned.iter().chain(uniform).chain([full]).collect();
    let xlo = all.iter().map(|p| p.cost).fold(f64::INFINITY, f64::min);
    let xhi = all.iter().map(|p| p.cost).fold(0.0, f64::max);
    let ylo = all.iter().map(|p| p.ci.0).fold(f64::INFINITY, f64::min);
    let yhi = all.iter().map(|p| p.ci.1).fold(f64::NEG_INFINITY, f64::max);
    let xr = padded(xlo.min(0.7 * full.cost), xhi, 0.08);
    let yr = padded(ylo, yhi, 0.1);
    Figure::white(760, 500, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(format!("mean test Dice against {xdesc}"), font(18))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(58)
            .build_cartesian_2d(xr.clone(), yr.clone())
            .map_err(de)?;
        chart
            .configure_mesh()
            .x_desc(xdesc)
            .y_desc("mean Dice (%), 95% CI")
            .x_label_formatter(&tick(xr.end - xr.start))
            .y_label_formatter(&tick(yr.end - yr.start))
            .label_style(font(13))
            .axis_desc_style(font(14))
            .draw()
            .map_err(de)?;
        let x70 = 0.7 * full.cost;
        chart
            .draw_series(DashedLineSeries::new(
                [(x70, yr.start), (x70, yr.end)],
                6,
                4,
                colors::GREY.stroke_width(1),
            ))
            .map_err(de)?;
        chart
            .draw_series([Text::new(
                mark.to_string(),
                (
                    x70 + (xr.end - xr.start) * 0.01,
                    yr.end - (yr.end - yr.start) * 0.03,
                ),
                font(13).color(&colors::GREY),
            )])
            .map_err(de)?;
        for (name, pts, colour) in [
            ("learned (search)", learned, colors::BLUE),
            ("uniform control", uniform, colors::ORANGE),
        ] {
            if pts.is_empty() {
                continue;
            }
            let mut sorted = pts.to_vec();
            sorted.sort_by(|a, b| a.cost.total_cmp(&b.cost));
            chart
                .draw_series(LineSeries::new(
                    sorted.iter().map(|p| (p.cost, p.dice)),
                    colour.stroke_width(2),
                ))
                .map_err(de)?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2))
                });
            chart
                .draw_series(sorted.iter().map(|p| {
                    ErrorBar::new_vertical(
                        p.cost,
                        p.ci.0,
                        p.dice,
                        p.ci.1,
                        colour.stroke_width(1),
                        8,
                    )
                }))
                .map_err(de)?;
            chart
                .draw_series(
                    sorted
                        .iter()
                        .map(|p| Circle::new((p.cost, p.dice), 4, colour.filled())),
                )
                .map_err(de)?;
            chart
                .draw_series(sorted.iter().map(|p| {
                    Text::new(
                        p.label.clone(),
                        (p.cost + (xr.end - xr.start) * 0.008, p.dice),
                        font(12).color(&colour),
                    )
                }))
                .map_err(de)?;
        }
        chart
            .draw_series([ErrorBar::new_vertical(
                full.cost,
                full.ci.0,
                full.dice,
                full.ci.1,
                colors::INK.stroke_width(1),
                8,
            )])
            .map_err(de)?;
        chart
            .draw_series([Cross::new(
                (full.cost, full.dice),
                6,
                colors::INK.stroke_width(2),
            )])
            .map_err(de)?
            .label(full.label.clone())
            .legend(|(x, y)| Cross::new((x + 9, y), 5, colors::INK.stroke_width(2)));
        chart
            .configure_series_labels()
            .label_font(font(13))
            .background_style(WHITE.mix(0.85))
            .border_style(colors::GREY)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(de)?;
        Ok(())
    })
}

/// One row of the overlay figure: a label and equally sized RGB tiles.
#[derive(Debug, Clone)]
pub struct OverlayRow {
    /// "patient 101, slice 5 of 10, ED".
    pub label: String,
    /// `(width, height, rgb)` per column.
    pub tiles: Vec<(u32, u32, Vec<u8>)>,
}

/// Overlay tiles in a grid with column titles, row labels and a colour legend.
pub fn overlays(
    titles: &[String],
    rows: &[OverlayRow],
    legend: &[(&str, [u8; 3])],
) -> Result<Figure> {
    let (tw, th) = rows
        .iter()
        .flat_map(|r| &r.tiles)
        .fold((1, 1), |(w, h), t| (w.max(t.0), h.max(t.1)));
    let cols = titles.len() as u32;
    let (gap, top, label_h, bottom) = (10u32, 30u32, 22u32, 34u32);
    let width = cols * (tw + gap) + gap;
    let height = top + rows.len() as u32 * (label_h + th + gap) + bottom;
    let mut bg = vec![255u8; (width * height * 3) as usize];
    for (i, row) in rows.iter().enumerate() {
        let y0 = top + i as u32 * (label_h + th + gap) + label_h;
        for (j, (w, h, rgb)) in row.tiles.iter().enumerate() {
            let x0 = gap + j as u32 * (tw + gap);
            for y in 0..*h {
                let s = (y * w * 3) as usize;
                let d = (((y0 + y) * width + x0) * 3) as usize;
                bg[d..d + (w * 3) as usize].copy_from_slice(&rgb[s..s + (w * 3) as usize]);
            }
        }
    }
    Figure::draw(width, height, bg, |root| {
        for (j, t) in titles.iter().enumerate() {
            let x = (gap + j as u32 * (tw + gap)) as i32;
            root.draw(&Text::new(t.clone(), (x, 8), font(15)))
                .map_err(de)?;
        }
        for (i, row) in rows.iter().enumerate() {
            let y = (top + i as u32 * (label_h + th + gap) + 3) as i32;
            root.draw(&Text::new(row.label.clone(), (gap as i32, y), font(13)))
                .map_err(de)?;
        }
        let mut x = gap as i32;
        let y = (height - bottom + 10) as i32;
        for (name, [r, g, b]) in legend {
            root.draw(&Rectangle::new(
                [(x, y), (x + 14, y + 14)],
                RGBColor(*r, *g, *b).filled(),
            ))
            .map_err(de)?;
            root.draw(&Text::new(name.to_string(), (x + 20, y), font(13)))
                .map_err(de)?;
            x += 30 + 8 * name.len() as i32;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_drawn_with_the_embedded_font() {
        // A figure with a caption has dark pixels in its caption band; without the
        // font registered plotters fails to lay out text.
        let f = gates(&[GatePanel {
            name: "MLP units".into(),
            magnitudes: vec![0.0, 0.0, 0.3, 0.5, 0.9],
            threshold: Some(0.4),
        }])
        .unwrap();
        assert_eq!((f.width, f.height), (440, 330));
        let band = &f.rgb[..(f.width * 30 * 3) as usize];
        assert!(band.iter().any(|&v| v < 100), "no caption was drawn");
    }
}
