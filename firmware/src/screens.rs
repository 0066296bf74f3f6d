//! The front panel's screens: pure functions from a [`PanelState`] to pixels.
//!
//! Each screen draws into any `DrawTarget<Color = BinaryColor>` — the SSD1306 through the
//! `ssd1306` crate, or a [`crate::Framebuffer`] for PNGs and tests — so the layout exists
//! once. Layouts are designed for the 128x64 module and keep the last column and row free,
//! so the driver's one-pixel burn-in shift never clips them; the 128x32 module gets compact
//! variants. Text uses embedded-graphics mono fonts: 6x10 for labels (about 7 mm tall on a
//! 0.96" panel, readable from a metre) and 10x20 for the headline.

use embedded_graphics::mono_font::iso_8859_1::{
    FONT_10X20, FONT_6X10, FONT_6X9, FONT_7X13_BOLD, FONT_9X15_BOLD,
};
use embedded_graphics::mono_font::{MonoFont, MonoTextStyle};
use embedded_graphics::pixelcolor::BinaryColor;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{Line, PrimitiveStyle, Rectangle};
use embedded_graphics::text::{Baseline, Text};
use serde::{Deserialize, Serialize};

use crate::model::{AgentBar, JobProgress, PanelState, Phase};

/// The two SSD1306 modules people buy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum PanelSize {
    #[default]
    #[serde(rename = "128x64")]
    W128xH64,
    #[serde(rename = "128x32")]
    W128xH32,
}

impl PanelSize {
    pub fn width(self) -> u32 {
        128
    }

    pub fn height(self) -> u32 {
        match self {
            PanelSize::W128xH64 => 64,
            PanelSize::W128xH32 => 32,
        }
    }

    /// `128x64` or `128x32`, as written in the config and in golden file names.
    pub fn name(self) -> &'static str {
        match self {
            PanelSize::W128xH64 => "128x64",
            PanelSize::W128xH32 => "128x32",
        }
    }

    fn compact(self) -> bool {
        self == PanelSize::W128xH32
    }
}

/// What the panel can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Screen {
    /// Agents, CPU and memory allocation, a mini bar per agent.
    Cluster,
    /// The pi job; drawn as [`Screen::NoJob`] when there is no job.
    Pi,
    WaitingForAgents,
    NoJob,
    MasterStarting,
    /// The master's `Phase::Error` text.
    Error,
    /// A replicated master standing by: "standby", its term and the leader.
    Standby,
}

impl Screen {
    pub fn name(self) -> &'static str {
        match self {
            Screen::Cluster => "cluster",
            Screen::Pi => "pi",
            Screen::WaitingForAgents => "waiting_for_agents",
            Screen::NoJob => "no_job",
            Screen::MasterStarting => "master_starting",
            Screen::Error => "error",
            Screen::Standby => "standby",
        }
    }
}

/// The screens that take turns on the panel for this state, in order. With a job running the
/// pi and cluster screens alternate, the job's first (it is what someone who just started one
/// looks for, and what `bramble display --png` shows); otherwise one screen (the cluster, or a
/// plain state).
pub fn select_screens(state: &PanelState) -> Vec<Screen> {
    match &state.phase {
        Phase::Starting => vec![Screen::MasterStarting],
        Phase::Error(_) => vec![Screen::Error],
        Phase::Standby { .. } => vec![Screen::Standby],
        Phase::Running => {
            let overview = if state.agents_up == 0 {
                Screen::WaitingForAgents
            } else {
                Screen::Cluster
            };
            if state.job.is_some() {
                vec![Screen::Pi, overview]
            } else {
                vec![overview]
            }
        }
    }
}

/// Draws one screen for `state`, shifted by `offset` pixels. Does not clear the target.
pub fn draw_screen<D>(
    target: &mut D,
    screen: &Screen,
    state: &PanelState,
    size: PanelSize,
    offset: Point,
) -> Result<(), D::Error>
where
    D: DrawTarget<Color = BinaryColor>,
{
    let mut d = target.translated(offset);
    let compact = size.compact();
    match screen {
        Screen::Cluster => draw_cluster(&mut d, state, compact),
        Screen::Pi => match &state.job {
            Some(job) => draw_pi(&mut d, job, compact),
            None => draw_plain(&mut d, &no_job_text(state), compact),
        },
        Screen::NoJob => draw_plain(&mut d, &no_job_text(state), compact),
        Screen::WaitingForAgents => draw_plain(
            &mut d,
            &Plain {
                title: &["waiting", "for agents"],
                detail: vec![format!(
                    "{}: {}/{} up",
                    state.cluster_name, state.agents_up, state.agents_known
                )],
            },
            compact,
        ),
        Screen::MasterStarting => draw_plain(
            &mut d,
            &Plain {
                title: &["master", "starting"],
                detail: vec![state.cluster_name.clone()],
            },
            compact,
        ),
        Screen::Standby => match &state.phase {
            Phase::Standby { term, leader } => {
                draw_standby(&mut d, *term, leader.as_deref(), compact)
            }
            _ => draw_error(&mut d, "not standing by", compact),
        },
        Screen::Error => {
            let msg = match &state.phase {
                Phase::Error(m) => m.as_str(),
                _ => "unknown error",
            };
            draw_error(&mut d, msg, compact)
        }
    }
}

fn no_job_text(state: &PanelState) -> Plain<'static> {
    Plain {
        title: &["no job", "running"],
        detail: vec![format!(
            "{}: {}/{} up",
            state.cluster_name, state.agents_up, state.agents_known
        )],
    }
}

// ---------------------------------------------------------------------------------------
// Layout constants. The usable area is 127 x (height - 1): the last column and row are the
// burn-in shift's room.

const RIGHT: i32 = 126;
const ON: BinaryColor = BinaryColor::On;

/// What every screen draws into: a monochrome `DrawTarget` (the panel, or a PNG in tests).
trait Canvas: DrawTarget<Color = BinaryColor> {}
impl<T: DrawTarget<Color = BinaryColor>> Canvas for T {}

fn style(font: &'static MonoFont<'static>) -> MonoTextStyle<'static, BinaryColor> {
    MonoTextStyle::new(font, ON)
}

fn char_w(font: &MonoFont) -> i32 {
    (font.character_size.width + font.character_spacing) as i32
}

fn text_w(s: &str, font: &MonoFont) -> i32 {
    s.chars().count() as i32 * char_w(font)
}

/// Cuts `s` to at most `max_px` wide in `font`.
fn fit(s: &str, font: &MonoFont, max_px: i32) -> String {
    let max = (max_px / char_w(font)).max(0) as usize;
    s.chars().take(max).collect()
}

fn text<D: Canvas>(
    d: &mut D,
    s: &str,
    font: &'static MonoFont<'static>,
    x: i32,
    y: i32,
) -> Result<(), D::Error> {
    Text::with_baseline(s, Point::new(x, y), style(font), Baseline::Top).draw(d)?;
    Ok(())
}

fn text_right<D: Canvas>(
    d: &mut D,
    s: &str,
    font: &'static MonoFont<'static>,
    right: i32,
    y: i32,
) -> Result<(), D::Error> {
    text(d, s, font, right + 1 - text_w(s, font), y)
}

fn text_center<D: Canvas>(
    d: &mut D,
    s: &str,
    font: &'static MonoFont<'static>,
    y: i32,
) -> Result<(), D::Error> {
    let s = fit(s, font, RIGHT + 1);
    let x = (RIGHT + 1 - text_w(&s, font)) / 2;
    text(d, &s, font, x, y)
}

/// Which way a bar's fill grows.
#[derive(Clone, Copy)]
enum Grows {
    Rightwards,
    Upwards,
}

/// A bar: a one-pixel outline, a one-pixel gap, and a fill for `fraction` growing `grows`.
fn bar<D: Canvas>(
    d: &mut D,
    (x, y, w, h): (i32, i32, i32, i32),
    grows: Grows,
    fraction: f64,
) -> Result<(), D::Error> {
    Rectangle::new(Point::new(x, y), Size::new(w as u32, h as u32))
        .into_styled(PrimitiveStyle::with_stroke(ON, 1))
        .draw(d)?;
    if w <= 4 || h <= 4 {
        return Ok(());
    }
    let (origin, size) = match grows {
        Grows::Rightwards => {
            let fill = filled_px(fraction, w - 4);
            (
                Point::new(x + 2, y + 2),
                Size::new(fill as u32, (h - 4) as u32),
            )
        }
        Grows::Upwards => {
            let fill = filled_px(fraction, h - 4);
            (
                Point::new(x + 2, y + h - 2 - fill),
                Size::new((w - 4) as u32, fill as u32),
            )
        }
    };
    if size.width > 0 && size.height > 0 {
        Rectangle::new(origin, size)
            .into_styled(PrimitiveStyle::with_fill(ON))
            .draw(d)?;
    }
    Ok(())
}

/// Pixels to fill for `fraction` of `inner`: anything above zero shows at least one pixel,
/// anything short of full leaves at least one pixel empty, so "almost" never looks "done".
fn filled_px(fraction: f64, inner: i32) -> i32 {
    if !fraction.is_finite() || fraction <= 0.0 || inner <= 0 {
        return 0;
    }
    if fraction >= 1.0 {
        return inner;
    }
    ((fraction * inner as f64).round() as i32).clamp(1, inner - 1)
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        (a / b).clamp(0.0, 1.0)
    } else {
        0.0
    }
}

// ---------------------------------------------------------------------------------------
// Cluster

fn draw_cluster<D: Canvas>(d: &mut D, s: &PanelState, compact: bool) -> Result<(), D::Error> {
    // Header: name on the left, agents (and temperature) on the right.
    let mut right = format!("{}/{} up", s.agents_up, s.agents_known);
    if let Some(t) = s.temperature_c {
        right.push_str(&format!(" {:.0}\u{b0}", t));
    }
    let right_w = text_w(&right, &FONT_6X10);
    text_right(d, &right, &FONT_6X10, RIGHT, 0)?;
    let title = s.notice.as_deref().unwrap_or(&s.cluster_name);
    let name = fit(title, &FONT_6X10, RIGHT + 1 - right_w - 6);
    text(d, &name, &FONT_6X10, 0, 0)?;

    let cpu = format!("{}/{}", fmt_cpus(s.cpus_allocated), fmt_cpus(s.cpus_total));
    let mem = fmt_mem_pair(s.mem_allocated_mib, s.mem_total_mib);
    let value_w = text_w(&cpu, &FONT_6X10).max(text_w(&mem, &FONT_6X10));
    let bar_x = 22;
    let bar_w = RIGHT + 1 - value_w - 4 - bar_x;

    let (cpu_y, mem_y) = if compact { (11, 21) } else { (12, 23) };
    for (y, label, value, frac) in [
        (cpu_y, "CPU", &cpu, ratio(s.cpus_allocated, s.cpus_total)),
        (
            mem_y,
            "MEM",
            &mem,
            ratio(s.mem_allocated_mib as f64, s.mem_total_mib as f64),
        ),
    ] {
        text(d, label, &FONT_6X10, 0, y)?;
        bar(d, (bar_x, y, bar_w, 9), Grows::Rightwards, frac)?;
        text_right(d, value, &FONT_6X10, RIGHT, y)?;
    }
    if compact {
        return Ok(());
    }

    // A separator, then one mini bar per agent while they fit.
    Line::new(Point::new(0, 34), Point::new(RIGHT, 34))
        .into_styled(PrimitiveStyle::with_stroke(ON, 1))
        .draw(d)?;
    draw_agents(d, &s.agents, 37, 63 - 37)
}

/// Agents as labelled rows when up to three, else as vertical columns (with "+N" for the rest).
fn draw_agents<D: Canvas>(
    d: &mut D,
    agents: &[AgentBar],
    top: i32,
    height: i32,
) -> Result<(), D::Error> {
    const ROW: i32 = 8;
    let rows = (height / ROW) as usize;
    if agents.len() <= rows {
        // Name column as wide as the longest name (at most 8 characters), values aligned.
        let name_w = agents
            .iter()
            .map(|a| text_w(&fit(&a.name, &FONT_6X9, 48), &FONT_6X9))
            .max()
            .unwrap_or(0);
        let values: Vec<String> = agents
            .iter()
            .map(|a| format!("{}/{}", fmt_cpus(a.cpus_allocated), fmt_cpus(a.cpus_total)))
            .collect();
        let value_w = values
            .iter()
            .map(|v| text_w(v, &FONT_6X9))
            .max()
            .unwrap_or(0);
        let bar_x = name_w + 5;
        let bar_w = RIGHT + 1 - bar_x - value_w - 5;
        for (i, (a, value)) in agents.iter().zip(&values).enumerate() {
            let y = top + i as i32 * ROW;
            text(d, &fit(&a.name, &FONT_6X9, 48), &FONT_6X9, 0, y - 1)?;
            if a.up && a.unhealthy {
                text(d, "unhealthy", &FONT_6X9, bar_x, y - 1)?;
            } else if a.up {
                bar(
                    d,
                    (bar_x, y, bar_w, 7),
                    Grows::Rightwards,
                    ratio(a.cpus_allocated, a.cpus_total),
                )?;
                text_right(d, value, &FONT_6X9, RIGHT, y - 1)?;
            } else {
                text(d, "down", &FONT_6X9, bar_x, y - 1)?;
            }
        }
        return Ok(());
    }
    // Columns, as wide as the room allows: 5 to 13 px with a 3 px gap; "+N" for the rest.
    let more_w = 18;
    let pitch = ((RIGHT + 1 + 3) / agents.len() as i32).clamp(8, 16);
    let fits_all = agents.len() as i32 * pitch - 3 <= RIGHT + 1;
    let cols = if fits_all {
        agents.len()
    } else {
        ((RIGHT + 1 - more_w) / pitch) as usize
    };
    let w = pitch - 3;
    for (i, a) in agents.iter().take(cols).enumerate() {
        let x = i as i32 * pitch;
        if a.up && a.unhealthy {
            // An unhealthy agent: an exclamation mark at the foot of its slot.
            let base = top + height - 1;
            let cx = x + w / 2;
            Line::new(Point::new(cx, base - 8), Point::new(cx, base - 3))
                .into_styled(PrimitiveStyle::with_stroke(ON, 1))
                .draw(d)?;
            Pixel(Point::new(cx, base), ON).draw(d)?;
        } else if a.up {
            bar(
                d,
                (x, top, w, height),
                Grows::Upwards,
                ratio(a.cpus_allocated, a.cpus_total),
            )?;
        } else {
            // A down agent: a small cross at the foot of an empty slot.
            let base = top + height - 1;
            let (x0, x1) = (x + (w - 5) / 2, x + (w - 5) / 2 + 4);
            Line::new(Point::new(x0, base - 4), Point::new(x1, base))
                .into_styled(PrimitiveStyle::with_stroke(ON, 1))
                .draw(d)?;
            Line::new(Point::new(x0, base), Point::new(x1, base - 4))
                .into_styled(PrimitiveStyle::with_stroke(ON, 1))
                .draw(d)?;
        }
    }
    if !fits_all {
        let more = format!("+{}", agents.len() - cols);
        text_right(d, &more, &FONT_6X9, RIGHT, top + height - 10)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Pi

fn draw_pi<D: Canvas>(d: &mut D, job: &JobProgress, compact: bool) -> Result<(), D::Error> {
    let estimate = fmt_estimate(job.estimate, job.correct_digits);
    let digits = format!(
        "{} digit{}",
        job.correct_digits,
        if job.correct_digits == 1 { "" } else { "s" }
    );
    let pct = format!("{:.0}%", (job.fraction() * 100.0).floor());
    let rate = fmt_rate(job.terms_per_s);
    let left = if job.is_done() {
        "done".to_string()
    } else {
        match job.eta_s {
            Some(s) => format!("{} left", fmt_duration(s)),
            None => "-- left".to_string(),
        }
    };
    // The largest font the estimate fits in.
    let big: &'static MonoFont<'static> = [&FONT_10X20, &FONT_7X13_BOLD, &FONT_6X10]
        .into_iter()
        .find(|f| text_w(&estimate, f) <= RIGHT + 1)
        .unwrap_or(&FONT_6X10);

    if compact {
        // 0..16 estimate, 18..25 bar and percent, 22..31 rate and time left.
        let big = if std::ptr::eq(big, &FONT_10X20) {
            &FONT_9X15_BOLD
        } else {
            big
        };
        let big = if text_w(&estimate, big) > RIGHT + 1 {
            &FONT_6X10
        } else {
            big
        };
        text(d, &estimate, big, 0, 0)?;
        let tail = format!("{}d", job.correct_digits);
        if text_w(&estimate, big) + 6 + text_w(&tail, &FONT_6X10) <= RIGHT + 1 {
            text_right(d, &tail, &FONT_6X10, RIGHT, 3)?;
        }
        let pw = text_w("100%", &FONT_6X10);
        bar(
            d,
            (0, 16, RIGHT + 1 - pw - 3, 6),
            Grows::Rightwards,
            job.fraction(),
        )?;
        text_right(d, &pct, &FONT_6X10, RIGHT, 14)?;
        text(d, &rate, &FONT_6X10, 0, 23)?;
        text_right(d, &left, &FONT_6X10, RIGHT, 23)?;
        return Ok(());
    }

    // Header: job name and correct digits.
    let digits_w = text_w(&digits, &FONT_6X10);
    text_right(d, &digits, &FONT_6X10, RIGHT, 0)?;
    let name = fit(&job.name, &FONT_6X10, RIGHT + 1 - digits_w - 6);
    text(d, &name, &FONT_6X10, 0, 0)?;

    // Headline: the estimate, only its correct digits, vertically centred in 11..35.
    let big_h = big.character_size.height as i32;
    text(d, &estimate, big, 0, 12 + (20 - big_h) / 2)?;

    // Progress bar with percent.
    let pw = text_w("100%", &FONT_6X10);
    bar(
        d,
        (0, 36, RIGHT + 1 - pw - 4, 9),
        Grows::Rightwards,
        job.fraction(),
    )?;
    text_right(d, &pct, &FONT_6X10, RIGHT, 36)?;

    // Rate and time left.
    text(d, &rate, &FONT_6X10, 0, 51)?;
    text_right(d, &left, &FONT_6X10, RIGHT, 51)
}

// ---------------------------------------------------------------------------------------
// Plain states

struct Plain<'a> {
    /// Headline, one entry per line on the 64-row panel, joined on the 32-row one.
    title: &'a [&'a str],
    detail: Vec<String>,
}

fn draw_plain<D: Canvas>(d: &mut D, p: &Plain, compact: bool) -> Result<(), D::Error> {
    if compact {
        let title = p.title.join(" ");
        let font = if text_w(&title, &FONT_7X13_BOLD) <= RIGHT + 1 {
            &FONT_7X13_BOLD
        } else {
            &FONT_6X10
        };
        text_center(d, &title, font, 3)?;
        if let Some(detail) = p.detail.first() {
            text_center(d, detail, &FONT_6X10, 19)?;
        }
        return Ok(());
    }
    let top = 4;
    for (i, line) in p.title.iter().enumerate() {
        text_center(d, line, &FONT_10X20, top + i as i32 * 20)?;
    }
    if let Some(detail) = p.detail.first() {
        text_center(d, detail, &FONT_6X10, 51)?;
    }
    Ok(())
}

/// A standby master: the word, its term, and who leads (or that an election is on).
fn draw_standby<D: Canvas>(
    d: &mut D,
    term: u64,
    leader: Option<&str>,
    compact: bool,
) -> Result<(), D::Error> {
    let leader = match leader {
        Some(l) => format!("leader {l}"),
        None => "electing a leader".to_string(),
    };
    if compact {
        text_center(d, "standby", &FONT_7X13_BOLD, 1)?;
        text_center(d, &format!("term {term}"), &FONT_6X10, 14)?;
        return text_center(d, &leader, &FONT_6X10, 23);
    }
    text_center(d, "standby", &FONT_10X20, 4)?;
    text_center(d, &format!("term {term}"), &FONT_6X10, 30)?;
    text_center(d, &leader, &FONT_6X10, 44)
}

fn draw_error<D: Canvas>(d: &mut D, msg: &str, compact: bool) -> Result<(), D::Error> {
    let per_line = ((RIGHT + 1) / char_w(&FONT_6X10)) as usize;
    if compact {
        text(d, "ERROR", &FONT_7X13_BOLD, 0, 0)?;
        let lines = wrap(msg, per_line, 2);
        for (i, line) in lines.iter().enumerate() {
            text(d, line, &FONT_6X10, 0, 12 + i as i32 * 10)?;
        }
        return Ok(());
    }
    // Inverted title bar so an error is unmistakable from across the room.
    Rectangle::new(Point::new(0, 0), Size::new((RIGHT + 1) as u32, 19))
        .into_styled(PrimitiveStyle::with_fill(ON))
        .draw(d)?;
    let title = "ERROR";
    let x = (RIGHT + 1 - text_w(title, &FONT_10X20)) / 2;
    Text::with_baseline(
        title,
        Point::new(x, 0),
        MonoTextStyle::new(&FONT_10X20, BinaryColor::Off),
        Baseline::Top,
    )
    .draw(d)?;
    for (i, line) in wrap(msg, per_line, 4).iter().enumerate() {
        text(d, line, &FONT_6X10, 0, 22 + i as i32 * 10)?;
    }
    Ok(())
}

/// Greedy word wrap into at most `max_lines` lines of `width` chars; words longer than a
/// line are split; what does not fit ends the last line with "..".
pub(crate) fn wrap(s: &str, width: usize, max_lines: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut truncated = false;
    'words: for word in s.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        loop {
            let cur_len = cur.chars().count();
            let need = if cur.is_empty() {
                word.len()
            } else {
                cur_len + 1 + word.len()
            };
            if need <= width {
                if !cur.is_empty() {
                    cur.push(' ');
                }
                cur.extend(word.iter());
                break;
            }
            if cur.is_empty() {
                // A word longer than a line: split it.
                cur.extend(word.drain(..width));
            }
            lines.push(std::mem::take(&mut cur));
            if lines.len() == max_lines {
                truncated = true;
                break 'words;
            }
        }
    }
    if !cur.is_empty() && lines.len() < max_lines {
        lines.push(cur);
    }
    if truncated {
        if let Some(last) = lines.last_mut() {
            let keep = width.saturating_sub(2);
            *last = last.chars().take(keep).collect::<String>() + "..";
        }
    }
    lines
}

// ---------------------------------------------------------------------------------------
// Number formatting, human units.

/// CPUs as "4" or "2.5".
pub fn fmt_cpus(c: f64) -> String {
    if (c - c.round()).abs() < 0.05 {
        format!("{:.0}", c.round())
    } else {
        format!("{:.1}", c)
    }
}

/// Memory as "used/totalU" in one unit chosen by the total: "512/900M", "1.5/3.8G", "11/15G".
pub fn fmt_mem_pair(used_mib: u64, total_mib: u64) -> String {
    if total_mib < 1024 {
        return format!("{used_mib}/{total_mib}M");
    }
    let g = |mib: u64| {
        let v = mib as f64 / 1024.0;
        if v < 9.95 {
            format!("{:.1}", v)
        } else {
            format!("{:.0}", v)
        }
    };
    format!("{}/{}G", g(used_mib), g(total_mib))
}

/// A rate with SI units and three significant digits: "950/s", "12.3k/s", "12.3M/s", "1.23G/s".
pub fn fmt_rate(per_s: f64) -> String {
    if !per_s.is_finite() || per_s < 0.0 {
        return "--/s".into();
    }
    let units = ["", "k", "M", "G", "T", "P"];
    let mut v = per_s;
    let mut u = 0;
    while v >= 999.5 && u < units.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    let num = if u == 0 || v >= 99.95 {
        format!("{:.0}", v)
    } else if v >= 9.995 {
        format!("{:.1}", v)
    } else {
        format!("{:.2}", v)
    };
    format!("{num}{}/s", units[u])
}

/// A duration as "42s", "3m05s", "1h02m" or "2d03h".
pub fn fmt_duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "--".into();
    }
    let s = secs.round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// The estimate cut (never rounded) to its `correct_digits` decimals: 3.14159265 with 5
/// correct digits is "3.14159". An f64 carries at most 15 trustworthy decimals.
pub fn fmt_estimate(estimate: f64, correct_digits: u32) -> String {
    if !estimate.is_finite() {
        return "?".into();
    }
    let digits = correct_digits.min(15) as usize;
    // Extra decimals so the cut below truncates instead of rounding.
    let full = format!("{:.*}", digits + 3, estimate);
    let dot = full.find('.').unwrap_or(full.len());
    if digits == 0 {
        full[..dot].to_string()
    } else {
        full[..dot + 1 + digits].to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_shows_only_its_correct_digits() {
        assert_eq!(fmt_estimate(std::f64::consts::PI, 5), "3.14159");
        assert_eq!(fmt_estimate(3.141_599_9, 5), "3.14159");
        assert_eq!(fmt_estimate(3.2, 0), "3");
        assert_eq!(fmt_estimate(std::f64::consts::PI, 40), "3.141592653589793");
    }

    #[test]
    fn rates_use_si_units() {
        assert_eq!(fmt_rate(12_345_678.0), "12.3M/s");
        assert_eq!(fmt_rate(950.0), "950/s");
        assert_eq!(fmt_rate(1_234.0), "1.23k/s");
        assert_eq!(fmt_rate(123_456_789.0), "123M/s");
        assert_eq!(fmt_rate(2.5e9), "2.50G/s");
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(fmt_duration(42.0), "42s");
        assert_eq!(fmt_duration(185.0), "3m05s");
        assert_eq!(fmt_duration(3720.0), "1h02m");
        assert_eq!(fmt_duration(2.0 * 86_400.0 + 3.0 * 3600.0), "2d03h");
    }

    #[test]
    fn memory_picks_one_unit_by_total() {
        assert_eq!(fmt_mem_pair(512, 900), "512/900M");
        assert_eq!(fmt_mem_pair(1536, 3891), "1.5/3.8G");
        assert_eq!(fmt_mem_pair(11 * 1024, 15 * 1024), "11/15G");
    }

    #[test]
    fn wrap_splits_on_words_and_marks_truncation() {
        assert_eq!(wrap("a bb ccc", 4, 3), vec!["a bb", "ccc"]);
        assert_eq!(wrap("abcdefgh", 4, 3), vec!["abcd", "efgh"]);
        assert_eq!(wrap("one two three four", 5, 2), vec!["one", "two.."]);
    }

    #[test]
    fn bars_never_look_done_before_they_are() {
        assert_eq!(filled_px(0.999, 100), 99);
        assert_eq!(filled_px(0.001, 100), 1);
        assert_eq!(filled_px(0.0, 100), 0);
        assert_eq!(filled_px(1.0, 100), 100);
    }

    fn running(job: bool, agents_up: u32) -> PanelState {
        let mut s = PanelState::starting("c");
        s.phase = Phase::Running;
        s.agents_up = agents_up;
        s.agents_known = 3;
        if job {
            s.job = Some(JobProgress {
                name: "pi".into(),
                terms_done: 1,
                terms_total: 2,
                estimate: 3.1,
                correct_digits: 1,
                terms_per_s: 1.0,
                eta_s: None,
            });
        }
        s
    }

    #[test]
    fn screens_rotate_only_with_a_job() {
        assert_eq!(select_screens(&running(false, 2)), vec![Screen::Cluster]);
        assert_eq!(
            select_screens(&running(true, 2)),
            vec![Screen::Pi, Screen::Cluster]
        );
        assert_eq!(
            select_screens(&running(false, 0)),
            vec![Screen::WaitingForAgents]
        );
        assert_eq!(
            select_screens(&PanelState::starting("c")),
            vec![Screen::MasterStarting]
        );
        let mut err = running(true, 2);
        err.phase = Phase::Error("boom".into());
        assert_eq!(select_screens(&err), vec![Screen::Error]);
        let mut standby = running(true, 2);
        standby.phase = Phase::Standby {
            term: 4,
            leader: Some("2 10.0.0.2".into()),
        };
        assert_eq!(select_screens(&standby), vec![Screen::Standby]);
    }
}
