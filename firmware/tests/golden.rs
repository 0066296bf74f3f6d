//! Golden pictures of every screen and state, drawn through the real path: DisplayDriver →
//! the ssd1306 crate → I2C bytes (RecordingI2c) → Ssd1306Decoder → pixels, compared with the
//! PNGs under tests/golden/. Regenerate deliberately with `BRAMBLE_UPDATE_GOLDEN=1`.

mod common;

use std::time::{Duration, Instant};

use bramble_firmware::testing::RecordingI2c;
use bramble_firmware::{DisplayDriver, PanelSize, PanelState, Rotation, Screen, UpdateOutcome};
use common::*;

const SIZES: [PanelSize; 2] = [PanelSize::W128xH64, PanelSize::W128xH32];

/// Draws `state` through the driver, optionally waiting `wait` for the screen rotation, and
/// returns what the decoded I2C stream shows. Also checks the panel shows exactly the frame
/// the PNG renderer composes: two targets of one drawing.
fn through_panel(
    state: &PanelState,
    size: PanelSize,
    pin: Option<Screen>,
    rotations: u32,
) -> bramble_firmware::Framebuffer {
    let rec = RecordingI2c::new();
    let config = config_for(size);
    let rotate = Duration::from_secs(config.rotate_secs);
    let mut driver = DisplayDriver::with_i2c(rec.clone(), config);
    driver.pin_screen(pin);
    let t0 = Instant::now();
    assert_eq!(driver.update(state, t0), UpdateOutcome::Drawn);
    for i in 1..=rotations {
        assert_eq!(driver.update(state, t0 + rotate * i), UpdateOutcome::Drawn);
    }
    let picture = decode(&rec);
    assert_eq!(picture.height(), size.height());
    assert_eq!(
        Some(&picture),
        driver.frame(),
        "the panel shows what the renderer composed"
    );
    picture
}

fn golden(name: &str, state: PanelState, pin: Option<Screen>, rotations: u32) {
    for size in SIZES {
        let picture = through_panel(&state, size, pin, rotations);
        assert!(
            picture.lit() > 0,
            "{name} at {} draws something",
            size.name()
        );
        check_golden(&format!("{name}_{}", size.name()), &picture);
    }
}

#[test]
fn cluster_with_three_agents_matches_golden() {
    golden("cluster_3_agents", cluster_3_agents(), None, 0);
}

/// Issue 22: an agent that is up but gets no offers says so on the panel.
#[test]
fn cluster_with_an_unhealthy_agent_matches_golden() {
    golden(
        "cluster_unhealthy_agent",
        cluster_unhealthy_agent(),
        None,
        0,
    );
    golden(
        "cluster_7_agents_one_unhealthy",
        cluster_7_agents_one_unhealthy(),
        None,
        0,
    );
}

#[test]
fn cluster_with_seven_agents_uses_columns_and_matches_golden() {
    golden("cluster_7_agents", cluster_7_agents(), None, 0);
}

#[test]
fn cluster_with_no_agents_says_waiting_and_matches_golden() {
    golden("cluster_0_agents", cluster_0_agents(), None, 0);
}

#[test]
fn pi_mid_job_matches_golden_as_the_first_screen_while_a_job_runs() {
    golden("pi_mid_job", pi_mid_job(), None, 0);
}

#[test]
fn pi_done_matches_golden_as_the_first_screen_while_a_job_runs() {
    golden("pi_done", pi_done(), None, 0);
}

#[test]
fn pi_screen_without_a_job_says_no_job_and_matches_golden() {
    golden("no_job", cluster_3_agents(), Some(Screen::Pi), 0);
}

#[test]
fn master_starting_matches_golden() {
    golden("master_starting", master_starting(), None, 0);
}

#[test]
fn error_state_matches_golden() {
    golden("error", error_state(), None, 0);
}

#[test]
fn upside_down_panel_shows_the_same_picture_turned_round() {
    for size in SIZES {
        let rec = RecordingI2c::new();
        let config = bramble_firmware::DisplayConfig {
            rotation: Rotation::Deg180,
            ..config_for(size)
        };
        let mut driver = DisplayDriver::with_i2c(rec.clone(), config);
        assert_eq!(
            driver.update(&pi_mid_job(), Instant::now()),
            UpdateOutcome::Drawn
        );
        let upright = through_panel(&pi_mid_job(), size, None, 0);
        let decoded = decode(&rec);
        assert_ne!(decoded, upright, "180° really flips the glass");
        assert_eq!(decoded.rotated_180(), upright);
    }
}

#[test]
fn a_golden_mismatch_fails_with_the_pixel_count_and_writes_the_actual_png() {
    if std::env::var_os("BRAMBLE_UPDATE_GOLDEN").is_some() {
        return; // this test checks the comparing mode
    }
    let dir = tempfile::tempdir().unwrap();
    let golden_png = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/pi_mid_job_128x64.png"),
    )
    .unwrap();
    std::fs::write(dir.path().join("probe.png"), &golden_png).unwrap();
    let mut picture = bramble_firmware::from_png(&golden_png, GOLDEN_SCALE).unwrap();
    check_golden_in(dir.path(), "probe", &picture); // identical: passes

    picture.set(5, 5, !picture.get(5, 5));
    picture.set(6, 5, !picture.get(6, 5));
    let err = std::panic::catch_unwind(|| check_golden_in(dir.path(), "probe", &picture))
        .expect_err("a changed picture must fail");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("2 pixels differ"), "{msg}");
    let actual = std::fs::read(dir.path().join("probe.actual.png")).unwrap();
    assert_eq!(
        bramble_firmware::from_png(&actual, GOLDEN_SCALE).unwrap(),
        picture
    );
}
