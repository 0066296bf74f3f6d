//! Test doubles for the panel, public so other crates' tests (the master's display loop,
//! the CLI's `display --png`) can use them too.
//!
//! [`RecordingI2c`] stands in for `/dev/i2c-N` and keeps every write; [`Ssd1306Decoder`]
//! replays those bytes the way the SSD1306 controller would and yields the picture on the
//! glass. Together they let tests go through the real driver stack (our [`crate::Panel`] →
//! the `ssd1306` crate → I2C bytes) and still compare pictures.

use std::sync::{Arc, Mutex, MutexGuard};

use embedded_hal::i2c::{
    ErrorKind, ErrorType, I2c, NoAcknowledgeSource, Operation, SevenBitAddress,
};

use crate::render::Framebuffer;

/// One I2C write: the 7-bit address and the bytes after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    pub address: u8,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Default)]
struct Recording {
    writes: Vec<Transaction>,
    failing: bool,
    failed_attempts: usize,
}

/// An I2C bus that records every write. Clones share one recording, so a test keeps a clone
/// while the driver owns the other. It can be told to fail (as an unplugged panel does: the
/// address is not acknowledged). Reads return zeros.
#[derive(Debug, Clone, Default)]
pub struct RecordingI2c {
    inner: Arc<Mutex<Recording>>,
}

impl RecordingI2c {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Recording> {
        // A test that panicked while holding the lock has already failed; keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every write so far, oldest first.
    pub fn transactions(&self) -> Vec<Transaction> {
        self.lock().writes.clone()
    }

    /// Takes (and forgets) the writes so far.
    pub fn take(&self) -> Vec<Transaction> {
        std::mem::take(&mut self.lock().writes)
    }

    /// Number of writes so far.
    pub fn len(&self) -> usize {
        self.lock().writes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// While failing, every transaction is refused with a NACK and not recorded.
    pub fn set_failing(&self, failing: bool) {
        self.lock().failing = failing;
    }

    /// Transactions refused while failing.
    pub fn failed_attempts(&self) -> usize {
        self.lock().failed_attempts
    }
}

impl ErrorType for RecordingI2c {
    type Error = ErrorKind;
}

impl I2c<SevenBitAddress> for RecordingI2c {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), Self::Error> {
        let mut rec = self.lock();
        if rec.failing {
            rec.failed_attempts += 1;
            return Err(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address));
        }
        for op in operations {
            match op {
                Operation::Write(bytes) => rec.writes.push(Transaction {
                    address,
                    bytes: bytes.to_vec(),
                }),
                Operation::Read(buf) => buf.fill(0),
            }
        }
        Ok(())
    }
}

/// Why a recorded stream is not something a real SSD1306 would accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("write #{index}: empty I2C write (no control byte)")]
    Empty { index: usize },
    #[error("write #{index}: control byte {byte:#04x} is neither 0x00/0x80 (command) nor 0x40/0xC0 (data)")]
    BadControl { index: usize, byte: u8 },
    #[error("write #{index}: unknown command {byte:#04x}")]
    UnknownCommand { index: usize, byte: u8 },
    #[error("write #{index}: command {command:#04x}: bad argument {arg:#04x}")]
    BadArgument { index: usize, command: u8, arg: u8 },
    #[error(
        "command {command:#04x} is missing {missing} argument byte(s) at the end of the stream"
    )]
    Truncated { command: u8, missing: usize },
}

/// The controller's memory addressing mode (command 0x20).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressingMode {
    Horizontal,
    Vertical,
    Page,
}

/// A model of the SSD1306 controller: fed the bytes written to its address, it keeps the
/// 128x64 display RAM (GDDRAM) and the settings that decide what the glass shows.
///
/// Strict: an unknown command or a malformed argument is an error, so a wrong init sequence
/// fails tests instead of drawing garbage quietly.
///
/// Orientation: [`Ssd1306Decoder::picture`] returns the glass as seen with the module the
/// usual way up, which for these modules is segment remap on (0xA1) and COM scan reversed
/// (0xC8) — what the `ssd1306` crate sends for `Rotate0`. A panel configured for 180° (0xA0,
/// 0xC0) therefore decodes upside down, exactly as it would look before it is mounted
/// upside down; `Framebuffer::rotated_180` turns it back.
#[derive(Debug, Clone)]
pub struct Ssd1306Decoder {
    /// GDDRAM: 8 pages of 128 columns, bit n of a byte is row page*8+n.
    ram: [[u8; 128]; 8],
    pub display_on: bool,
    pub contrast: u8,
    pub mode: AddressingMode,
    pub charge_pump: bool,
    pub segment_remap: bool,
    pub com_reversed: bool,
    pub inverted: bool,
    pub entire_on: bool,
    pub multiplex: u8,
    pub display_offset: u8,
    pub start_line: u8,
    pub com_pins: u8,
    pub scrolling: bool,
    col_window: (u8, u8),
    page_window: (u8, u8),
    col: u8,
    page: u8,
    /// Command bytes waiting for their arguments (commands may straddle writes).
    pending: Vec<u8>,
    writes: usize,
}

impl Default for Ssd1306Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Ssd1306Decoder {
    /// A controller as after reset (datasheet defaults).
    pub fn new() -> Self {
        Ssd1306Decoder {
            ram: [[0; 128]; 8],
            display_on: false,
            contrast: 0x7F,
            mode: AddressingMode::Page,
            charge_pump: false,
            segment_remap: false,
            com_reversed: false,
            inverted: false,
            entire_on: false,
            multiplex: 63,
            display_offset: 0,
            start_line: 0,
            com_pins: 0x12,
            scrolling: false,
            col_window: (0, 127),
            page_window: (0, 7),
            col: 0,
            page: 0,
            pending: Vec::new(),
            writes: 0,
        }
    }

    /// Replays every write to `address` (others are ignored) into a fresh controller.
    pub fn replay(address: u8, transactions: &[Transaction]) -> Result<Self, DecodeError> {
        let mut dec = Self::new();
        for t in transactions.iter().filter(|t| t.address == address) {
            dec.feed(&t.bytes)?;
        }
        dec.finish()?;
        Ok(dec)
    }

    /// Feeds one I2C write (control byte first).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), DecodeError> {
        let index = self.writes;
        self.writes += 1;
        let mut rest = bytes;
        loop {
            let Some((&control, after)) = rest.split_first() else {
                return if rest.len() == bytes.len() {
                    Err(DecodeError::Empty { index })
                } else {
                    Ok(())
                };
            };
            // Co (bit 7): only one byte follows before the next control byte.
            let single = control & 0x80 != 0;
            let data = match control & 0x7F {
                0x00 => false,
                0x40 => true,
                _ => {
                    return Err(DecodeError::BadControl {
                        index,
                        byte: control,
                    })
                }
            };
            let (chunk, next) = if single {
                after.split_at(after.len().min(1))
            } else {
                (after, &[][..])
            };
            if data {
                for &b in chunk {
                    self.write_data(b);
                }
            } else {
                for &b in chunk {
                    self.pending.push(b);
                    self.run_pending(index)?;
                }
            }
            if !single || next.is_empty() {
                return Ok(());
            }
            rest = next;
        }
    }

    /// Errors when the stream ended in the middle of a command.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.pending.first() {
            None => Ok(()),
            Some(&command) => Err(DecodeError::Truncated {
                command,
                missing: arity(command).unwrap_or(0) + 1 - self.pending.len(),
            }),
        }
    }

    /// The raw GDDRAM as a 128x64 picture, no remapping.
    pub fn gddram(&self) -> Framebuffer {
        let mut fb = Framebuffer::new(128, 64);
        for (page, cols) in self.ram.iter().enumerate() {
            for (x, byte) in cols.iter().enumerate() {
                for bit in 0..8 {
                    fb.set(x as u32, (page * 8 + bit) as u32, byte & (1 << bit) != 0);
                }
            }
        }
        fb
    }

    /// What the glass shows: 128 x (multiplex + 1) pixels, dark while the display is off,
    /// honouring start line, display offset, remap, scan direction, invert and entire-on.
    pub fn picture(&self) -> Framebuffer {
        let rows = u32::from(self.multiplex) + 1;
        let mut fb = Framebuffer::new(128, rows);
        if !self.display_on {
            return fb;
        }
        for i in 0..rows {
            let ram_row = (i + u32::from(self.start_line) + u32::from(self.display_offset)) % 64;
            let y = if self.com_reversed { i } else { rows - 1 - i };
            for col in 0..128u32 {
                let lit =
                    self.ram[(ram_row / 8) as usize][col as usize] & (1 << (ram_row % 8)) != 0;
                let x = if self.segment_remap { col } else { 127 - col };
                let on = self.entire_on || (lit != self.inverted);
                fb.set(x, y, on);
            }
        }
        fb
    }

    fn write_data(&mut self, byte: u8) {
        self.ram[self.page as usize % 8][self.col as usize % 128] = byte;
        match self.mode {
            AddressingMode::Horizontal => {
                if self.col >= self.col_window.1 {
                    self.col = self.col_window.0;
                    self.page = if self.page >= self.page_window.1 {
                        self.page_window.0
                    } else {
                        self.page + 1
                    };
                } else {
                    self.col += 1;
                }
            }
            AddressingMode::Vertical => {
                if self.page >= self.page_window.1 {
                    self.page = self.page_window.0;
                    self.col = if self.col >= self.col_window.1 {
                        self.col_window.0
                    } else {
                        self.col + 1
                    };
                } else {
                    self.page += 1;
                }
            }
            // Page mode: the column wraps at the end of the page, the page stays.
            AddressingMode::Page => self.col = if self.col >= 127 { 0 } else { self.col + 1 },
        }
    }

    fn run_pending(&mut self, index: usize) -> Result<(), DecodeError> {
        let cmd = self.pending[0];
        let Some(n) = arity(cmd) else {
            self.pending.clear();
            return Err(DecodeError::UnknownCommand { index, byte: cmd });
        };
        if self.pending.len() < n + 1 {
            return Ok(());
        }
        let args: Vec<u8> = self.pending.drain(..).skip(1).collect();
        let bad = |arg: u8| DecodeError::BadArgument {
            index,
            command: cmd,
            arg,
        };
        match cmd {
            0x00..=0x0F => self.col = (self.col & 0xF0) | cmd,
            0x10..=0x1F => self.col = ((cmd & 0x07) << 4) | (self.col & 0x0F),
            0x20 => {
                self.mode = match args[0] {
                    0 => AddressingMode::Horizontal,
                    1 => AddressingMode::Vertical,
                    2 => AddressingMode::Page,
                    a => return Err(bad(a)),
                }
            }
            0x21 => {
                let (s, e) = (args[0], args[1]);
                if s > 127 || e > 127 || s > e {
                    return Err(bad(if s > 127 || s > e { s } else { e }));
                }
                self.col_window = (s, e);
                self.col = s;
            }
            0x22 => {
                let (s, e) = (args[0], args[1]);
                if s > 7 || e > 7 || s > e {
                    return Err(bad(if s > 7 || s > e { s } else { e }));
                }
                self.page_window = (s, e);
                self.page = s;
            }
            0x26 | 0x27 | 0x29 | 0x2A | 0xA3 => {} // scroll setup: recorded nowhere
            0x2E => self.scrolling = false,
            0x2F => self.scrolling = true,
            0x40..=0x7F => self.start_line = cmd & 0x3F,
            0x81 => self.contrast = args[0],
            0x8D => {
                self.charge_pump = match args[0] {
                    0x14 => true,
                    0x10 => false,
                    a => return Err(bad(a)),
                }
            }
            0xA0 | 0xA1 => self.segment_remap = cmd == 0xA1,
            0xA4 | 0xA5 => self.entire_on = cmd == 0xA5,
            0xA6 | 0xA7 => self.inverted = cmd == 0xA7,
            0xA8 => {
                if !(15..=63).contains(&args[0]) {
                    return Err(bad(args[0]));
                }
                self.multiplex = args[0];
            }
            0xAD => {} // internal IREF (SSD1306B variants)
            0xAE | 0xAF => self.display_on = cmd == 0xAF,
            0xB0..=0xB7 => self.page = cmd & 0x07,
            0xC0 | 0xC8 => self.com_reversed = cmd == 0xC8,
            0xD3 => {
                if args[0] > 63 {
                    return Err(bad(args[0]));
                }
                self.display_offset = args[0];
            }
            0xD5 | 0xD9 | 0xDB => {} // clock, pre-charge, VCOMH: timing, not pixels
            0xDA => {
                if args[0] & !0x30 != 0x02 {
                    return Err(bad(args[0]));
                }
                self.com_pins = args[0];
            }
            0xE3 => {}
            _ => unreachable!("arity() lists only the commands handled here"),
        }
        Ok(())
    }
}

/// Argument bytes of each command the decoder knows; None for unknown commands.
fn arity(cmd: u8) -> Option<usize> {
    Some(match cmd {
        0x00..=0x1F => 0,
        0x20 => 1,
        0x21 | 0x22 => 2,
        0x26 | 0x27 => 6,
        0x29 | 0x2A => 5,
        0x2E | 0x2F => 0,
        0x40..=0x7F => 0,
        0x81 | 0x8D => 1,
        0xA0 | 0xA1 | 0xA4..=0xA7 => 0,
        0xA3 => 2,
        0xA8 | 0xAD => 1,
        0xAE | 0xAF => 0,
        0xB0..=0xB7 => 0,
        0xC0 | 0xC8 => 0,
        0xD3 | 0xD5 | 0xD9 | 0xDA | 0xDB => 1,
        0xE3 => 0,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_refuses_an_unknown_command() {
        let mut d = Ssd1306Decoder::new();
        let err = d.feed(&[0x00, 0xAE, 0xFF]).unwrap_err();
        assert_eq!(
            err,
            DecodeError::UnknownCommand {
                index: 0,
                byte: 0xFF
            }
        );
    }

    #[test]
    fn decoder_refuses_a_bad_control_byte_and_a_bad_argument() {
        let mut d = Ssd1306Decoder::new();
        assert!(matches!(
            d.feed(&[0x12, 0xAE]),
            Err(DecodeError::BadControl { .. })
        ));
        assert!(matches!(
            d.feed(&[0x00, 0x20, 0x03]),
            Err(DecodeError::BadArgument { command: 0x20, .. })
        ));
        assert!(matches!(
            d.feed(&[0x00, 0x8D, 0x99]),
            Err(DecodeError::BadArgument { command: 0x8D, .. })
        ));
    }

    #[test]
    fn decoder_reports_a_command_cut_short() {
        let t = vec![Transaction {
            address: 0x3C,
            bytes: vec![0x00, 0x21, 0x00],
        }];
        assert!(matches!(
            Ssd1306Decoder::replay(0x3C, &t),
            Err(DecodeError::Truncated {
                command: 0x21,
                missing: 1
            })
        ));
    }

    #[test]
    fn horizontal_mode_wraps_inside_the_column_and_page_window() {
        let mut d = Ssd1306Decoder::new();
        d.feed(&[0x00, 0x20, 0x00, 0x21, 10, 11, 0x22, 2, 3])
            .unwrap();
        d.feed(&[0x40, 0x01, 0x02, 0x04, 0x08, 0x10]).unwrap();
        let ram = d.gddram();
        assert!(ram.get(11, 17)); // page 2 col 11, bit 1
        assert!(ram.get(10, 26)); // page 3 col 10, bit 2
        assert!(ram.get(11, 27)); // page 3 col 11, bit 3
                                  // The fifth byte wrapped back to page 2 col 10, replacing the first.
        assert!(ram.get(10, 20) && !ram.get(10, 16));
        assert_eq!(ram.lit(), 4);
    }

    #[test]
    fn vertical_mode_walks_down_the_pages_first() {
        let mut d = Ssd1306Decoder::new();
        d.feed(&[0x00, 0x20, 0x01, 0x21, 0, 127, 0x22, 0, 1])
            .unwrap();
        d.feed(&[0x40, 0x01, 0x01, 0x01]).unwrap();
        let ram = d.gddram();
        assert!(ram.get(0, 0) && ram.get(0, 8) && ram.get(1, 0));
        assert_eq!(ram.lit(), 3);
    }

    #[test]
    fn page_mode_uses_page_and_column_nibble_commands() {
        let mut d = Ssd1306Decoder::new();
        // Page 5, column 0x2A, with single-command control bytes (Co set).
        d.feed(&[0x80, 0xB5, 0x80, 0x0A, 0x80, 0x12]).unwrap();
        d.feed(&[0x40, 0x80]).unwrap();
        assert!(d.gddram().get(0x2A, 5 * 8 + 7));
    }

    #[test]
    fn picture_follows_remap_scan_direction_and_display_on() {
        let mut d = Ssd1306Decoder::new();
        d.feed(&[0x00, 0x20, 0x00, 0x21, 0, 127, 0x22, 0, 7])
            .unwrap();
        d.feed(&[0x40, 0x01]).unwrap(); // RAM (0,0)
        assert_eq!(d.picture().lit(), 0, "display still off");
        d.feed(&[0x00, 0xAF, 0xA1, 0xC8]).unwrap();
        assert!(d.picture().get(0, 0));
        d.feed(&[0x00, 0xA0, 0xC0]).unwrap();
        assert!(d.picture().get(127, 63));
        d.feed(&[0x00, 0xA7]).unwrap();
        assert_eq!(d.picture().lit(), 128 * 64 - 1);
    }
}
