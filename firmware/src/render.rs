//! The in-memory target: a 1-bit framebuffer the screens draw into, and its PNG form.
//!
//! The driver composes every frame here first, so "did the picture change?" is a plain
//! comparison and the panel only hears about real changes. The same frame becomes a PNG for
//! the README, `bramble display --png`, and golden tests (`from_png` reads them back).

use std::convert::Infallible;

use embedded_graphics::pixelcolor::BinaryColor;
use embedded_graphics::prelude::*;

use crate::model::PanelState;
use crate::screens::{draw_screen, select_screens, PanelSize, Screen};

/// A monochrome picture, `width` x `height` pixels, one bool per pixel (on = lit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framebuffer {
    width: u32,
    height: u32,
    pixels: Vec<bool>,
}

impl Framebuffer {
    /// A dark framebuffer of the given size.
    pub fn new(width: u32, height: u32) -> Self {
        Framebuffer {
            width,
            height,
            pixels: vec![false; (width * height) as usize],
        }
    }

    /// A dark framebuffer as big as the panel.
    pub fn for_panel(size: PanelSize) -> Self {
        Self::new(size.width(), size.height())
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// Whether the pixel is lit; false outside the picture.
    pub fn get(&self, x: u32, y: u32) -> bool {
        x < self.width && y < self.height && self.pixels[(y * self.width + x) as usize]
    }

    /// Sets one pixel; ignored outside the picture.
    pub fn set(&mut self, x: u32, y: u32, on: bool) {
        if x < self.width && y < self.height {
            self.pixels[(y * self.width + x) as usize] = on;
        }
    }

    /// Number of lit pixels.
    pub fn lit(&self) -> usize {
        self.pixels.iter().filter(|p| **p).count()
    }

    /// Number of pixels that differ from `other` (every pixel counts when sizes differ).
    pub fn diff_count(&self, other: &Framebuffer) -> usize {
        if self.width != other.width || self.height != other.height {
            return self.pixels.len().max(other.pixels.len());
        }
        self.pixels
            .iter()
            .zip(&other.pixels)
            .filter(|(a, b)| a != b)
            .count()
    }

    /// The picture turned half a turn, as a panel mounted upside down shows it.
    pub fn rotated_180(&self) -> Framebuffer {
        let mut out = self.clone();
        out.pixels.reverse();
        out
    }

    /// Every pixel with its position, row by row.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u32, bool)> + '_ {
        self.pixels.iter().enumerate().map(move |(i, on)| {
            let i = i as u32;
            (i % self.width, i / self.width, *on)
        })
    }

    /// The picture as text, `#` for lit: handy in assertion messages.
    pub fn to_ascii(&self) -> String {
        let mut s = String::with_capacity(((self.width + 1) * self.height) as usize);
        for y in 0..self.height {
            for x in 0..self.width {
                s.push(if self.get(x, y) { '#' } else { '.' });
            }
            s.push('\n');
        }
        s
    }
}

impl OriginDimensions for Framebuffer {
    fn size(&self) -> Size {
        Size::new(self.width, self.height)
    }
}

impl DrawTarget for Framebuffer {
    type Color = BinaryColor;
    type Error = Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Self::Color>>,
    {
        for Pixel(p, color) in pixels {
            if p.x >= 0 && p.y >= 0 {
                self.set(p.x as u32, p.y as u32, color.is_on());
            }
        }
        Ok(())
    }

    fn clear(&mut self, color: Self::Color) -> Result<(), Self::Error> {
        self.pixels.fill(color.is_on());
        Ok(())
    }
}

/// Draws `screen` for `state` into a fresh framebuffer as big as the panel, shifted by
/// `offset` pixels (the burn-in guard). This is exactly what the driver sends to the panel.
pub fn compose(state: &PanelState, screen: &Screen, size: PanelSize, offset: Point) -> Framebuffer {
    let mut fb = Framebuffer::for_panel(size);
    match draw_screen(&mut fb, screen, state, size, offset) {
        Ok(()) => fb,
        Err(never) => match never {},
    }
}

/// Renders `state` offline as a PNG: `screen`, or the first screen [`select_screens`] would
/// show. For `bramble display --png FILE` from a saved state; a running master should use
/// `to_png(driver.frame(), ..)` instead, which is exactly what is on the glass (rotation and
/// burn-in shift included).
pub fn render_png(
    state: &PanelState,
    size: PanelSize,
    screen: Option<Screen>,
    scale: u32,
) -> Vec<u8> {
    let screen = screen
        .or_else(|| select_screens(state).first().copied())
        .unwrap_or(Screen::Cluster);
    to_png(&compose(state, &screen, size, Point::zero()), scale)
}

/// Why a PNG could not be turned back into a framebuffer.
#[derive(Debug, thiserror::Error)]
pub enum PngError {
    #[error("decoding PNG: {0}")]
    Decode(#[from] png::DecodingError),
    #[error("PNG is {width}x{height}, not a multiple of scale {scale}")]
    Scale { width: u32, height: u32, scale: u32 },
    #[error("PNG pixel block at ({x},{y}) is not one colour: not a {scale}x scaled panel picture")]
    Blurred { x: u32, y: u32, scale: u32 },
    #[error("unsupported PNG colour type {0:?}")]
    ColorType(png::ColorType),
}

/// Encodes the picture as an 8-bit greyscale PNG, lit pixels white on black like the OLED,
/// each pixel blown up to `scale` x `scale` (4 reads well in a README). `scale` 0 counts as 1.
pub fn to_png(fb: &Framebuffer, scale: u32) -> Vec<u8> {
    let scale = scale.max(1);
    let (w, h) = (fb.width * scale, fb.height * scale);
    let mut data = Vec::with_capacity((w * h) as usize);
    for y in 0..h {
        for x in 0..w {
            data.push(if fb.get(x / scale, y / scale) {
                0xFF
            } else {
                0x00
            });
        }
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::High);
        // Writing into a Vec with a header we just built cannot fail.
        let mut writer = enc.write_header().expect("PNG header into memory");
        writer
            .write_image_data(&data)
            .expect("PNG image data into memory");
    }
    out
}

/// Reads a PNG written by [`to_png`] (or any greyscale/RGB(A) PNG whose `scale` x `scale`
/// blocks are uniform) back into a framebuffer; a pixel is lit when brighter than mid-grey.
pub fn from_png(bytes: &[u8], scale: u32) -> Result<Framebuffer, PngError> {
    let scale = scale.max(1);
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info()?;
    let mut buf = vec![0; reader.output_buffer_size().unwrap_or(0)];
    let info = reader.next_frame(&mut buf)?;
    let channels = match info.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => return Err(PngError::ColorType(other)),
    };
    let (w, h) = (info.width, info.height);
    if w % scale != 0 || h % scale != 0 {
        return Err(PngError::Scale {
            width: w,
            height: h,
            scale,
        });
    }
    let lit = |x: u32, y: u32| {
        let i = (y as usize * info.line_size) + x as usize * channels;
        // Luma of the first (or only) channels is enough for a black/white picture.
        let v = if channels >= 3 {
            (buf[i] as u32 + buf[i + 1] as u32 + buf[i + 2] as u32) / 3
        } else {
            buf[i] as u32
        };
        v >= 128
    };
    let mut fb = Framebuffer::new(w / scale, h / scale);
    for by in 0..h / scale {
        for bx in 0..w / scale {
            let on = lit(bx * scale, by * scale);
            for dy in 0..scale {
                for dx in 0..scale {
                    if lit(bx * scale + dx, by * scale + dy) != on {
                        return Err(PngError::Blurred {
                            x: bx,
                            y: by,
                            scale,
                        });
                    }
                }
            }
            fb.set(bx, by, on);
        }
    }
    Ok(fb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_round_trips_at_scale() {
        let mut fb = Framebuffer::new(128, 32);
        fb.set(0, 0, true);
        fb.set(127, 31, true);
        fb.set(64, 10, true);
        let png = to_png(&fb, 4);
        let back = from_png(&png, 4).unwrap();
        assert_eq!(back, fb);
        assert_eq!(back.lit(), 3);
    }

    #[test]
    fn render_png_draws_the_selected_screen_at_scale() {
        let state = PanelState::starting("bramble");
        let png = render_png(&state, PanelSize::W128xH32, None, 2);
        let fb = from_png(&png, 2).unwrap();
        assert_eq!((fb.width(), fb.height()), (128, 32));
        let expected = compose(
            &state,
            &Screen::MasterStarting,
            PanelSize::W128xH32,
            Point::zero(),
        );
        assert_eq!(fb, expected);
        assert!(fb.lit() > 0);
    }

    #[test]
    fn from_png_refuses_a_wrong_scale() {
        let fb = Framebuffer::new(128, 64);
        let png = to_png(&fb, 4);
        assert!(matches!(from_png(&png, 3), Err(PngError::Scale { .. })));
    }

    #[test]
    fn rotated_180_moves_the_top_left_pixel_to_the_bottom_right() {
        let mut fb = Framebuffer::new(128, 64);
        fb.set(0, 0, true);
        assert!(fb.rotated_180().get(127, 63));
        assert_eq!(fb.rotated_180().lit(), 1);
    }
}
