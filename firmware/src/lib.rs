//! The master Pi's hardware: an SSD1306 OLED front panel over I2C, its screen layouts, and
//! board facts (model, serial, SoC temperature).
//!
//! Shaped like an embedded-hal driver: the screens are pure functions that draw a
//! [`PanelState`] into any `DrawTarget<Color = BinaryColor>`. The same drawing lands in a
//! [`Framebuffer`] that becomes a PNG ([`to_png`]) or is pushed to the panel by [`Panel`],
//! which is generic over `embedded_hal::i2c::I2c` — a Linux `/dev/i2c-N` on the Pi, a
//! [`testing::RecordingI2c`] in tests. [`testing::Ssd1306Decoder`] turns the recorded bytes
//! back into the picture the glass would show, so golden PNGs test the real path.
//!
//! Nothing here knows about the network or the cluster: the master turns its live state into
//! a [`PanelState`] and hands it to a [`DisplayDriver`] a few times a second.

pub mod board;
pub mod model;
pub mod panel;
pub mod render;
pub mod screens;
pub mod testing;

pub use board::BoardFacts;
pub use model::{AgentBar, JobProgress, PanelState, Phase};
pub use panel::{
    DisplayConfig, DisplayDriver, Enabled, LinuxDisplayDriver, Panel, PanelError, Rotation,
    UpdateOutcome,
};
pub use render::{compose, from_png, render_png, to_png, Framebuffer, PngError};
pub use screens::{draw_screen, select_screens, PanelSize, Screen};
