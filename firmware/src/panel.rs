//! The physical panel and the loop logic that keeps it showing the cluster.
//!
//! [`Panel`] is the thin hardware edge: the `ssd1306` crate over any
//! `embedded_hal::i2c::I2c`, fed whole [`Framebuffer`]s and sending only what changed.
//! [`DisplayDriver`] is the policy, kept out of the hardware so tests drive it with a
//! [`crate::testing::RecordingI2c`] and hand-made `Instant`s: which screen is up, when to
//! redraw (only on change, at most `max_fps`), when to shift for burn-in, and how to live
//! with a flaky or missing panel (warn once, retry every `retry_secs`, never panic).
//!
//! The driver does blocking I2C. The master owns it on a dedicated thread (or calls it via
//! `tokio::task::spawn_blocking`) and calls [`DisplayDriver::update`] a few times a second.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use embedded_graphics::prelude::Point;
use embedded_hal::i2c::I2c;
use serde::{Deserialize, Serialize};
use ssd1306::mode::BufferedGraphicsMode;
use ssd1306::prelude::{DisplayConfig as _, DisplayRotation, I2CInterface};
use ssd1306::size::{DisplaySize128x32, DisplaySize128x64};
use ssd1306::{I2CDisplayInterface, Ssd1306};

use crate::model::PanelState;
use crate::render::{compose, Framebuffer};
use crate::screens::{select_screens, PanelSize, Screen};

// ---------------------------------------------------------------------------------------
// Configuration

/// Whether to drive a panel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Enabled {
    /// Use the panel if one answers at `address` on the bus; otherwise run without one.
    #[default]
    Auto,
    /// Expect a panel: a missing one is a warning, retried every `retry_secs`.
    On,
    Off,
}

/// How the panel is mounted. Only landscape mountings: the screens are laid out for a wide
/// panel, so 90 and 270 are refused with an explanation rather than drawn clipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "u16", into = "u16")]
pub enum Rotation {
    #[default]
    Deg0,
    Deg180,
}

impl TryFrom<u16> for Rotation {
    type Error = String;

    fn try_from(deg: u16) -> Result<Self, Self::Error> {
        match deg {
            0 => Ok(Rotation::Deg0),
            180 => Ok(Rotation::Deg180),
            90 | 270 => Err(format!(
                "rotation {deg}: portrait mounting is not supported (the screens are laid out \
                 for a 128-pixel-wide panel); use 0 or 180"
            )),
            other => Err(format!("rotation {other}: use 0 or 180")),
        }
    }
}

impl From<Rotation> for u16 {
    fn from(r: Rotation) -> u16 {
        match r {
            Rotation::Deg0 => 0,
            Rotation::Deg180 => 180,
        }
    }
}

impl Rotation {
    fn ssd1306(self) -> DisplayRotation {
        match self {
            Rotation::Deg0 => DisplayRotation::Rotate0,
            Rotation::Deg180 => DisplayRotation::Rotate180,
        }
    }
}

/// `[display]` in the master's TOML. Every field has a default; unknown keys are errors.
///
/// ```toml
/// [display]
/// enabled = "auto"    # auto | on | off
/// bus = 1             # /dev/i2c-1
/// address = 0x3C
/// size = "128x64"     # or "128x32"
/// rotation = 0        # or 180
/// rotate_secs = 8     # cluster <-> pi while a job runs
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DisplayConfig {
    pub enabled: Enabled,
    /// I2C bus number N, for `/dev/i2c-N`.
    pub bus: u8,
    /// 7-bit I2C address; 0x3C on most modules, 0x3D with the address jumper moved.
    pub address: u8,
    pub size: PanelSize,
    pub rotation: Rotation,
    /// Seconds each screen stays up while several take turns.
    pub rotate_secs: u64,
    /// Most redraws per second.
    pub max_fps: u32,
    /// Seconds between one-pixel burn-in shifts.
    pub shift_secs: u64,
    /// Seconds between attempts to reach a panel that failed.
    pub retry_secs: u64,
}

impl Default for DisplayConfig {
    fn default() -> Self {
        DisplayConfig {
            enabled: Enabled::Auto,
            bus: 1,
            address: 0x3C,
            size: PanelSize::W128xH64,
            rotation: Rotation::Deg0,
            rotate_secs: 8,
            max_fps: 4,
            shift_secs: 180,
            retry_secs: 30,
        }
    }
}

impl DisplayConfig {
    /// `/dev/i2c-{bus}`.
    pub fn device_path(&self) -> PathBuf {
        PathBuf::from(format!("/dev/i2c-{}", self.bus))
    }

    fn min_frame_interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / f64::from(self.max_fps.max(1)))
    }
}

// ---------------------------------------------------------------------------------------
// The panel

/// Why the panel could not be driven.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PanelError {
    /// The bus refused a write: no panel at the address, a loose wire, a dead bus.
    #[error("SSD1306 at {address:#04x}: {doing}: I2C write failed ({detail})")]
    Bus {
        address: u8,
        doing: &'static str,
        detail: String,
    },
    #[error("frame is {got_w}x{got_h}, the panel is {want_w}x{want_h}")]
    FrameSize {
        got_w: u32,
        got_h: u32,
        want_w: u32,
        want_h: u32,
    },
}

type Disp<I, S> = Ssd1306<I2CInterface<I>, S, BufferedGraphicsMode<S>>;

// One panel per process: the 512-byte difference between the framebuffers does not matter.
#[allow(clippy::large_enum_variant)]
enum Sized<I> {
    Large(Disp<I, DisplaySize128x64>),
    Small(Disp<I, DisplaySize128x32>),
}

/// Calls the same code on whichever size the panel has (the `ssd1306` crate makes size a type).
macro_rules! with_disp {
    ($sized:expr, $d:ident => $body:expr) => {
        match $sized {
            Sized::Large($d) => $body,
            Sized::Small($d) => $body,
        }
    };
}

/// An SSD1306 on an I2C bus. Remembers the last frame it sent, so [`Panel::show`] only sends
/// the rows and columns that changed.
pub struct Panel<I> {
    disp: Sized<I>,
    address: u8,
    size: PanelSize,
    /// What the panel's RAM holds, when known (None before init or after an error).
    shown: Option<Framebuffer>,
}

impl<I: I2c> Panel<I> {
    /// Wraps the bus; sends nothing until [`Panel::init`].
    pub fn new(i2c: I, address: u8, size: PanelSize, rotation: Rotation) -> Self {
        let iface = I2CDisplayInterface::new_custom_address(i2c, address);
        let rot = rotation.ssd1306();
        let disp = match size {
            PanelSize::W128xH64 => Sized::Large(
                Ssd1306::new(iface, DisplaySize128x64, rot).into_buffered_graphics_mode(),
            ),
            PanelSize::W128xH32 => Sized::Small(
                Ssd1306::new(iface, DisplaySize128x32, rot).into_buffered_graphics_mode(),
            ),
        };
        Panel {
            disp,
            address,
            size,
            shown: None,
        }
    }

    pub fn size(&self) -> PanelSize {
        self.size
    }

    fn bus_error(&self, doing: &'static str, e: impl std::fmt::Debug) -> PanelError {
        PanelError::Bus {
            address: self.address,
            doing,
            detail: format!("{e:?}"),
        }
    }

    /// Sends the init sequence (display off, clocks, multiplex, charge pump, addressing,
    /// orientation, contrast, display on). The panel's RAM is unknown afterwards, so the next
    /// [`Panel::show`] sends a whole frame.
    pub fn init(&mut self) -> Result<(), PanelError> {
        self.shown = None;
        let r = with_disp!(&mut self.disp, d => d.init());
        r.map_err(|e| self.bus_error("sending the init sequence", e))
    }

    /// Puts `frame` on the glass, sending only what differs from the last frame shown.
    pub fn show(&mut self, frame: &Framebuffer) -> Result<(), PanelError> {
        if frame.width() != self.size.width() || frame.height() != self.size.height() {
            return Err(PanelError::FrameSize {
                got_w: frame.width(),
                got_h: frame.height(),
                want_w: self.size.width(),
                want_h: self.size.height(),
            });
        }
        let previous = self.shown.take();
        with_disp!(&mut self.disp, d => {
            match &previous {
                // The crate tracks a dirty rectangle from the pixels we touch: touch only
                // the changed ones.
                Some(prev) => {
                    for ((x, y, on), (_, _, was)) in frame.iter().zip(prev.iter()) {
                        if on != was {
                            d.set_pixel(x, y, on);
                        }
                    }
                }
                // Unknown RAM: clearing marks the whole panel dirty.
                None => {
                    d.clear_buffer();
                    for (x, y, on) in frame.iter() {
                        if on {
                            d.set_pixel(x, y, true);
                        }
                    }
                }
            }
        });
        let r = with_disp!(&mut self.disp, d => d.flush());
        r.map_err(|e| self.bus_error("sending a frame", e))?;
        self.shown = Some(frame.clone());
        Ok(())
    }

    /// Gives the bus back.
    pub fn release(self) -> I {
        with_disp!(self.disp, d => d.release().release())
    }
}

/// Asks whether anything acknowledges `address`: a one-byte-command write of NOP (0xE3),
/// harmless to an SSD1306 and to most other chips.
pub fn probe<I: I2c>(i2c: &mut I, address: u8) -> bool {
    i2c.write(address, &[0x00, 0xE3]).is_ok()
}

// ---------------------------------------------------------------------------------------
// The driver

/// What one [`DisplayDriver::update`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// A new picture went to the panel.
    Drawn,
    /// The picture is the one already shown: no I2C traffic.
    Unchanged,
    /// Too soon after the last redraw (`max_fps`): nothing was done.
    Throttled,
    /// The panel is failing and the next retry is not due yet.
    Waiting,
    /// The panel failed just now (logged once per outage).
    Failed,
    /// Running without a panel; the picture is still composed for [`DisplayDriver::frame`].
    Headless,
}

enum Health {
    /// Not initialised yet (or re-initialising after a failure).
    Uninit,
    Ready,
    Failed {
        retry_at: Instant,
    },
}

/// The panel's policy: owns the [`Panel`] (if any) and turns `update(state, now)` calls into
/// as little I2C traffic as keeps the glass right.
pub struct DisplayDriver<I> {
    config: DisplayConfig,
    panel: Option<Panel<I>>,
    health: Health,
    /// Warned about the current outage already.
    warned: bool,
    pinned: Option<Screen>,
    screens: Vec<Screen>,
    screen_index: usize,
    screen_since: Option<Instant>,
    shift_index: usize,
    shift_since: Option<Instant>,
    last_compose: Option<Instant>,
    frame: Option<Framebuffer>,
}

/// The driver on a Linux I2C bus, as the master uses it.
pub type LinuxDisplayDriver = DisplayDriver<linux_embedded_hal::I2cdev>;

/// The burn-in shifts, visited in turn: the picture moves by at most one pixel each way.
const SHIFTS: [(i32, i32); 4] = [(0, 0), (1, 0), (1, 1), (0, 1)];

impl<I: I2c> DisplayDriver<I> {
    /// A driver for a panel on `i2c`, used as is (no probe). Nothing is sent until the
    /// first [`DisplayDriver::update`].
    pub fn with_i2c(i2c: I, config: DisplayConfig) -> Self {
        let panel = Panel::new(i2c, config.address, config.size, config.rotation);
        let mut d = Self::headless(config);
        d.panel = Some(panel);
        d
    }

    /// `enabled = auto` on a bus already open: keeps the panel only if something answers
    /// at the address, else logs one info line and runs headless.
    pub fn probe_with_i2c(mut i2c: I, config: DisplayConfig) -> Self {
        if probe(&mut i2c, config.address) {
            Self::with_i2c(i2c, config)
        } else {
            tracing::info!(
                address = format_args!("{:#04x}", config.address),
                bus = config.bus,
                "no display answers on the I2C bus; running without one"
            );
            Self::headless(config)
        }
    }

    /// A driver with no panel: it still composes frames, for [`DisplayDriver::frame`].
    pub fn headless(config: DisplayConfig) -> Self {
        DisplayDriver {
            config,
            panel: None,
            health: Health::Uninit,
            warned: false,
            pinned: None,
            screens: Vec::new(),
            screen_index: 0,
            screen_since: None,
            shift_index: 0,
            shift_since: None,
            last_compose: None,
            frame: None,
        }
    }

    pub fn config(&self) -> &DisplayConfig {
        &self.config
    }

    /// Whether a panel is attached (it may still be failing).
    pub fn has_panel(&self) -> bool {
        self.panel.is_some()
    }

    /// The picture as of the last update (what the panel shows, if it is healthy).
    pub fn frame(&self) -> Option<&Framebuffer> {
        self.frame.as_ref()
    }

    /// The screen the last update chose.
    pub fn current_screen(&self) -> Option<Screen> {
        self.pinned
            .or_else(|| self.screens.get(self.screen_index).copied())
    }

    /// Shows only `screen` (None: back to the automatic rotation).
    pub fn pin_screen(&mut self, screen: Option<Screen>) {
        self.pinned = screen;
    }

    /// Gives the bus back (None when headless).
    pub fn release(self) -> Option<I> {
        self.panel.map(Panel::release)
    }

    /// Brings the panel up to date with `state` as of `now`. Cheap when nothing changed;
    /// call it a few times a second. Never panics on I2C trouble.
    pub fn update(&mut self, state: &PanelState, now: Instant) -> UpdateOutcome {
        if let Some(last) = self.last_compose {
            if now.saturating_duration_since(last) < self.config.min_frame_interval() {
                return UpdateOutcome::Throttled;
            }
        }
        let screen = self.advance_screens(state, now);
        let offset = self.advance_shift(now);
        let frame = compose(state, &screen, self.config.size, offset);
        self.last_compose = Some(now);
        let changed = self.frame.as_ref() != Some(&frame);
        self.frame = Some(frame);

        let Some(panel) = self.panel.as_mut() else {
            return UpdateOutcome::Headless;
        };
        let frame = self.frame.as_ref().expect("just set");
        match self.health {
            Health::Ready if !changed => return UpdateOutcome::Unchanged,
            Health::Failed { retry_at } if now < retry_at => return UpdateOutcome::Waiting,
            _ => {}
        }
        let needs_init = !matches!(self.health, Health::Ready);
        let result =
            if needs_init { panel.init() } else { Ok(()) }.and_then(|()| panel.show(frame));
        match result {
            Ok(()) => {
                if self.warned {
                    tracing::info!(
                        address = format_args!("{:#04x}", self.config.address),
                        "display is answering again"
                    );
                    self.warned = false;
                }
                self.health = Health::Ready;
                UpdateOutcome::Drawn
            }
            Err(e) => {
                if !self.warned {
                    tracing::warn!(
                        error = %e,
                        retry_secs = self.config.retry_secs,
                        "display not responding; the cluster runs on, retrying quietly"
                    );
                    self.warned = true;
                }
                self.health = Health::Failed {
                    retry_at: now + Duration::from_secs(self.config.retry_secs),
                };
                UpdateOutcome::Failed
            }
        }
    }

    fn advance_screens(&mut self, state: &PanelState, now: Instant) -> Screen {
        if let Some(s) = self.pinned {
            return s;
        }
        let screens = select_screens(state);
        if screens != self.screens {
            // A different set (a job started or ended): start over at the first.
            self.screens = screens;
            self.screen_index = 0;
            self.screen_since = Some(now);
        } else if self.screens.len() > 1 {
            let since = *self.screen_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= Duration::from_secs(self.config.rotate_secs)
            {
                self.screen_index = (self.screen_index + 1) % self.screens.len();
                self.screen_since = Some(now);
            }
        }
        self.screens[self.screen_index.min(self.screens.len() - 1)]
    }

    fn advance_shift(&mut self, now: Instant) -> Point {
        let since = *self.shift_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= Duration::from_secs(self.config.shift_secs) {
            self.shift_index = (self.shift_index + 1) % SHIFTS.len();
            self.shift_since = Some(now);
        }
        let (x, y) = SHIFTS[self.shift_index];
        Point::new(x, y)
    }
}

impl LinuxDisplayDriver {
    /// Opens the panel the config asks for: `off` → headless; `auto` → `/dev/i2c-{bus}` if
    /// it opens and the address answers, else headless with one info line; `on` → the panel,
    /// warning (once) and retrying if it does not answer. Never fails.
    pub fn open(config: DisplayConfig) -> Self {
        if config.enabled == Enabled::Off {
            return Self::headless(config);
        }
        let path = config.device_path();
        match linux_embedded_hal::I2cdev::new(&path) {
            Ok(i2c) if config.enabled == Enabled::Auto => Self::probe_with_i2c(i2c, config),
            Ok(i2c) => Self::with_i2c(i2c, config),
            Err(e) if config.enabled == Enabled::Auto => {
                tracing::info!(path = %path.display(), error = %e, "no I2C bus for a display; running without one");
                Self::headless(config)
            }
            Err(e) => {
                tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "display enabled = \"on\" but the I2C bus cannot be opened (is dtparam=i2c_arm=on set in config.txt?); running without a display"
                );
                Self::headless(config)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_fill_an_empty_display_table() {
        let c: DisplayConfig = toml::from_str("").unwrap();
        assert_eq!(c, DisplayConfig::default());
        assert_eq!(c.address, 0x3C);
        assert_eq!(c.device_path(), PathBuf::from("/dev/i2c-1"));
    }

    #[test]
    fn config_reads_every_field() {
        let c: DisplayConfig = toml::from_str(
            "enabled = \"on\"\nbus = 3\naddress = 0x3D\nsize = \"128x32\"\nrotation = 180\nrotate_secs = 5\n",
        )
        .unwrap();
        assert_eq!(c.enabled, Enabled::On);
        assert_eq!(c.bus, 3);
        assert_eq!(c.address, 0x3D);
        assert_eq!(c.size, PanelSize::W128xH32);
        assert_eq!(c.rotation, Rotation::Deg180);
        assert_eq!(c.rotate_secs, 5);
    }

    #[test]
    fn config_refuses_unknown_keys_and_portrait_rotation() {
        let e = toml::from_str::<DisplayConfig>("adress = 0x3C").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        let e = toml::from_str::<DisplayConfig>("rotation = 90").unwrap_err();
        assert!(e.to_string().contains("portrait"), "{e}");
        assert!(toml::from_str::<DisplayConfig>("size = \"96x16\"").is_err());
    }
}
