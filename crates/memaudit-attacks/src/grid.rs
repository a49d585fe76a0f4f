//! Image grids: recovered images next to their originals, as PNG (the `png` crate) and as SVG
//! with the PNG embedded as a base64 data URI, so the HTML report stays self-contained.
//!
//! Layout: `pairs_per_row` cells per row; each cell is the original, a 1-pixel gap, the
//! recovered image; cells are separated by a 4-pixel gap. Gaps are mid-grey (128) so black and
//! white image borders stay visible. Every pixel is repeated `scale x scale` times.

use base64::Engine;

use crate::error::{AttackError, Result};
use crate::secret::ImageSecret;

const PAIR_GAP: usize = 1;
const CELL_GAP: usize = 4;
const GAP_VALUE: u8 = 128;

/// An 8-bit gray raster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrayImage {
    pub width: usize,
    pub height: usize,
    /// Row-major, `width * height` values.
    pub pixels: Vec<u8>,
}

impl GrayImage {
    fn blit(&mut self, src: &[u8], src_w: usize, src_h: usize, x0: usize, y0: usize, scale: usize) {
        for y in 0..src_h * scale {
            for x in 0..src_w * scale {
                self.pixels[(y0 + y) * self.width + x0 + x] = src[(y / scale) * src_w + x / scale];
            }
        }
    }
}

/// Originals and recovered images side by side. Both sets must have the same number of images
/// of the same size (compare a prefix with [`ImageSecret::first`]).
pub fn comparison_grid(
    originals: &ImageSecret,
    recovered: &ImageSecret,
    pairs_per_row: usize,
    scale: usize,
) -> Result<GrayImage> {
    originals.check_same_size(recovered, "image grid")?;
    if originals.n_images() != recovered.n_images() {
        return Err(AttackError::LengthMismatch {
            context: "image grid: recovered images for the originals".into(),
            what: "images",
            expected: originals.n_images(),
            found: recovered.n_images(),
        });
    }
    if pairs_per_row == 0 || scale == 0 {
        return Err(AttackError::Image(format!(
            "pairs per row ({pairs_per_row}) and scale ({scale}) must be at least 1"
        )));
    }
    let (h, w) = (originals.height() * scale, originals.width() * scale);
    let n = originals.n_images();
    let cols = pairs_per_row.min(n);
    let rows = n.div_ceil(cols);
    let cell_w = 2 * w + PAIR_GAP;
    let width = cols * cell_w + (cols - 1) * CELL_GAP;
    let height = rows * h + (rows - 1) * CELL_GAP;
    let mut grid = GrayImage {
        width,
        height,
        pixels: vec![GAP_VALUE; width * height],
    };
    for i in 0..n {
        let (row, col) = (i / cols, i % cols);
        let x0 = col * (cell_w + CELL_GAP);
        let y0 = row * (h + CELL_GAP);
        grid.blit(
            originals.image(i),
            originals.width(),
            originals.height(),
            x0,
            y0,
            scale,
        );
        grid.blit(
            recovered.image(i),
            originals.width(),
            originals.height(),
            x0 + w + PAIR_GAP,
            y0,
            scale,
        );
    }
    Ok(grid)
}

/// Encodes a gray raster as an 8-bit grayscale PNG.
pub fn encode_png(image: &GrayImage) -> Result<Vec<u8>> {
    let to_u32 = |v: usize| {
        u32::try_from(v).map_err(|_| AttackError::Image(format!("dimension {v} too large for PNG")))
    };
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, to_u32(image.width)?, to_u32(image.height)?);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder
        .write_header()
        .map_err(|e| AttackError::Image(format!("PNG header: {e}")))?;
    writer
        .write_image_data(&image.pixels)
        .map_err(|e| AttackError::Image(format!("PNG data: {e}")))?;
    writer
        .finish()
        .map_err(|e| AttackError::Image(format!("PNG finish: {e}")))?;
    Ok(out)
}

/// An SVG document showing `image` (embedded PNG, pixelated scaling) under a caption line that
/// says the left image of each pair is the original. `title` is escaped.
pub fn grid_svg(image: &GrayImage, title: &str) -> Result<String> {
    let png = encode_png(image)?;
    let data = base64::engine::general_purpose::STANDARD.encode(png);
    let caption_h = 20;
    let (w, h) = (image.width, image.height);
    let total_h = h + caption_h;
    let title = escape_xml(title);
    Ok(format!(
        concat!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{total_h}" viewBox="0 0 {w} {total_h}">"#,
            r#"<title>{title}</title>"#,
            r#"<text x="0" y="14" font-family="sans-serif" font-size="12">{title} (left: original, right: recovered)</text>"#,
            r#"<image x="0" y="{caption_h}" width="{w}" height="{h}" style="image-rendering:pixelated" href="data:image/png;base64,{data}"/>"#,
            "</svg>"
        ),
        w = w,
        h = h,
        total_h = total_h,
        caption_h = caption_h,
        title = title,
        data = data
    ))
}

/// Decodes a PNG (any colour type and bit depth) to 8-bit gray, so a user's own pictures can be
/// a secret. Colour becomes `0.299 R + 0.587 G + 0.114 B`, truncated to u8, which is how the
/// authors gray their CIFAR-10 targets (papers.md §1.2); alpha is dropped; 16-bit samples keep
/// their high byte; palettes are expanded.
pub fn decode_png_gray(bytes: &[u8]) -> Result<GrayImage> {
    let bad = |e: png::DecodingError| AttackError::Image(format!("not a readable PNG: {e}"));
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(bad)?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| AttackError::Image("PNG too large to decode".into()))?;
    let mut buf = vec![0; size];
    let info = reader.next_frame(&mut buf).map_err(bad)?;
    buf.truncate(info.buffer_size());
    let channels = match info.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => {
            return Err(AttackError::Image(
                "indexed PNG left unexpanded by the decoder".into(),
            ));
        }
    };
    if info.bit_depth != png::BitDepth::Eight {
        return Err(AttackError::Image(format!(
            "PNG decoded to {:?}-bit samples, expected 8",
            info.bit_depth
        )));
    }
    let (width, height) = (info.width as usize, info.height as usize);
    let pixels = buf
        .chunks_exact(channels)
        .take(width * height)
        .map(|px| match channels {
            1 | 2 => px[0],
            _ => {
                let luma =
                    0.299 * f64::from(px[0]) + 0.587 * f64::from(px[1]) + 0.114 * f64::from(px[2]);
                // truncation, as numpy's astype(uint8); luma <= 255 since the weights sum to 1
                luma.min(255.0) as u8
            }
        })
        .collect::<Vec<u8>>();
    if pixels.len() != width * height {
        return Err(AttackError::Image(format!(
            "PNG of {width}x{height} decoded to {} pixels",
            pixels.len()
        )));
    }
    Ok(GrayImage {
        width,
        height,
        pixels,
    })
}

fn escape_xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_png(bytes: &[u8]) -> GrayImage {
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Grayscale);
        buf.truncate(info.buffer_size());
        GrayImage {
            width: info.width as usize,
            height: info.height as usize,
            pixels: buf,
        }
    }

    #[test]
    fn grid_layout_png_and_svg_round_trip() {
        let originals = ImageSecret::new(
            3,
            2,
            2,
            vec![0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110],
        )
        .unwrap();
        let recovered = ImageSecret::new(3, 2, 2, vec![255; 12]).unwrap();
        let grid = comparison_grid(&originals, &recovered, 2, 2).unwrap();
        // 2 cells per row: 2 * (4 + 1 + 4) + 4 = 22 wide; 2 rows: 2 * 4 + 4 = 12 high
        assert_eq!((grid.width, grid.height), (22, 12));
        // image 0 scaled x2 at the top left: pixel (1, 1) of the grid is pixel (0, 0) = 0
        assert_eq!(grid.pixels[22 + 1], 0);
        assert_eq!(grid.pixels[2], 10); // (x=2, y=0) is source pixel (1, 0)
        assert_eq!(grid.pixels[4], GAP_VALUE); // the gap between original and recovered
        assert_eq!(grid.pixels[5], 255); // the recovered image
        // image 2 starts the second row at y = 8
        assert_eq!(grid.pixels[8 * 22], 80);
        // the empty cell of the last row stays grey
        assert_eq!(grid.pixels[11 * 22 + 21], GAP_VALUE);

        let png = encode_png(&grid).unwrap();
        assert_eq!(decode_png(&png), grid);

        let svg = grid_svg(&grid, "sign <encoding> & co").unwrap();
        assert!(svg.contains("sign &lt;encoding&gt; &amp; co"));
        let start = svg.find("base64,").unwrap() + 7;
        let end = start + svg[start..].find('"').unwrap();
        let embedded = base64::engine::general_purpose::STANDARD
            .decode(&svg[start..end])
            .unwrap();
        assert_eq!(decode_png(&embedded), grid);
    }

    #[test]
    fn png_decodes_to_gray_with_the_authors_luma() {
        let gray = GrayImage {
            width: 3,
            height: 2,
            pixels: vec![0, 1, 2, 100, 200, 255],
        };
        assert_eq!(decode_png_gray(&encode_png(&gray).unwrap()).unwrap(), gray);
        // an RGB PNG: red, green, blue, white, a mid colour, black
        let rgb = [
            255u8, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255, 10, 20, 30, 0, 0, 0,
        ];
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, 3, 2);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc.write_header().unwrap();
            w.write_image_data(&rgb).unwrap();
        }
        let decoded = decode_png_gray(&out).unwrap();
        // 0.299*255 = 76.2, 0.587*255 = 149.7, 0.114*255 = 29.07, white 255 (254.99.. in f64
        // sums to 255.0 exactly here), 0.299*10 + 0.587*20 + 0.114*30 = 18.13
        assert_eq!(decoded.pixels, vec![76, 149, 29, 255, 18, 0]);
        assert!(matches!(
            decode_png_gray(b"not a png"),
            Err(AttackError::Image(_))
        ));
    }

    #[test]
    fn mismatched_sets_are_refused() {
        let a = ImageSecret::new(2, 2, 2, vec![0; 8]).unwrap();
        let b = ImageSecret::new(2, 2, 1, vec![0; 4]).unwrap();
        assert!(matches!(
            comparison_grid(&a, &b, 2, 1),
            Err(AttackError::ImageSizeMismatch { .. })
        ));
        let c = ImageSecret::new(1, 2, 2, vec![0; 4]).unwrap();
        assert!(matches!(
            comparison_grid(&a, &c, 2, 1),
            Err(AttackError::LengthMismatch { .. })
        ));
        assert!(comparison_grid(&a, &a, 0, 1).is_err());
    }
}
