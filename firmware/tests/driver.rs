//! The DisplayDriver's policy, driven with hand-made Instants (no sleeping) over a
//! RecordingI2c: init bytes, redraw-on-change only, max fps, screen rotation, burn-in shift,
//! and living with a failing or missing panel.

mod common;

use std::time::{Duration, Instant};

use bramble_firmware::testing::{RecordingI2c, Ssd1306Decoder, Transaction};
use bramble_firmware::{
    compose, DisplayConfig, DisplayDriver, Enabled, PanelSize, Rotation, Screen, UpdateOutcome,
};
use common::*;
use embedded_graphics::prelude::Point;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn init_commands(rec: &RecordingI2c) -> Vec<Vec<u8>> {
    rec.transactions()
        .into_iter()
        .inspect(|t| assert_eq!(t.address, 0x3C))
        .take_while(|t| t.bytes[0] == 0x00 && t.bytes[1] != 0x21)
        .map(|t| t.bytes)
        .collect()
}

#[test]
fn init_sequence_for_128x64_is_exact() {
    let rec = RecordingI2c::new();
    let mut d = DisplayDriver::with_i2c(rec.clone(), DisplayConfig::default());
    assert!(rec.is_empty(), "nothing is sent before the first update");
    d.update(&cluster_3_agents(), Instant::now());
    let expected: Vec<Vec<u8>> = vec![
        vec![0x00, 0xAE],       // display off
        vec![0x00, 0xD5, 0x80], // clock divide / oscillator
        vec![0x00, 0xA8, 0x3F], // multiplex 64
        vec![0x00, 0xD3, 0x00], // display offset 0
        vec![0x00, 0x40],       // start line 0
        vec![0x00, 0x8D, 0x14], // charge pump on
        vec![0x00, 0x20, 0x00], // horizontal addressing
        vec![0x00, 0xDA, 0x12], // COM pins: alternative (64-row module)
        vec![0x00, 0xA1],       // segment remap
        vec![0x00, 0xC8],       // COM scan reversed
        vec![0x00, 0xD9, 0x21], // pre-charge
        vec![0x00, 0x81, 0x5F], // contrast
        vec![0x00, 0xDB, 0x40], // VCOMH
        vec![0x00, 0xA4],       // follow RAM
        vec![0x00, 0xA6],       // not inverted
        vec![0x00, 0x2E],       // scrolling off
        vec![0x00, 0xAF],       // display on
    ];
    assert_eq!(init_commands(&rec), expected);
    // Then one full frame: the whole window, 1024 bytes of data.
    let rest: Vec<Transaction> = rec.transactions().split_off(expected.len());
    assert_eq!(rest[0].bytes, vec![0x00, 0x21, 0, 127]);
    assert_eq!(rest[1].bytes, vec![0x00, 0x22, 0, 7]);
    let data: usize = rest[2..]
        .iter()
        .inspect(|t| assert_eq!(t.bytes[0], 0x40))
        .map(|t| t.bytes.len() - 1)
        .sum();
    assert_eq!(data, 1024);
}

#[test]
fn init_sequence_for_128x32_upside_down_differs_where_it_must() {
    let rec = RecordingI2c::new();
    let config = DisplayConfig {
        size: PanelSize::W128xH32,
        rotation: Rotation::Deg180,
        ..DisplayConfig::default()
    };
    DisplayDriver::with_i2c(rec.clone(), config).update(&cluster_3_agents(), Instant::now());
    let cmds = init_commands(&rec);
    assert!(cmds.contains(&vec![0x00, 0xA8, 0x1F]), "multiplex 32");
    assert!(
        cmds.contains(&vec![0x00, 0xDA, 0x02]),
        "sequential COM pins"
    );
    assert!(cmds.contains(&vec![0x00, 0xA0]) && cmds.contains(&vec![0x00, 0xC0]));
    let dec = Ssd1306Decoder::replay(0x3C, &rec.transactions()).unwrap();
    assert!(dec.display_on && dec.charge_pump);
    assert_eq!(dec.contrast, 0x5F);
    assert_eq!(dec.picture().height(), 32);
}

#[test]
fn unchanged_state_sends_no_i2c_traffic() {
    let rec = RecordingI2c::new();
    let mut d = DisplayDriver::with_i2c(rec.clone(), DisplayConfig::default());
    let t0 = Instant::now();
    let s = cluster_3_agents();
    assert_eq!(d.update(&s, t0), UpdateOutcome::Drawn);
    rec.take();
    for i in 1..20 {
        assert_eq!(d.update(&s, t0 + ms(250) * i), UpdateOutcome::Unchanged);
    }
    assert!(
        rec.is_empty(),
        "{} writes for an unchanged picture",
        rec.len()
    );
}

#[test]
fn a_change_sends_only_the_changed_region_and_decodes_right() {
    let rec = RecordingI2c::new();
    let mut d = DisplayDriver::with_i2c(rec.clone(), DisplayConfig::default());
    let t0 = Instant::now();
    let mut s = cluster_3_agents();
    d.update(&s, t0);
    let first: usize = rec.transactions().iter().map(|t| t.bytes.len()).sum();
    s.cpus_allocated = 10.0;
    assert_eq!(d.update(&s, t0 + secs(1)), UpdateOutcome::Drawn);
    let total: usize = rec.transactions().iter().map(|t| t.bytes.len()).sum();
    assert!(
        total - first < 400,
        "a small change sent {} bytes",
        total - first
    );
    assert_eq!(
        decode(&rec),
        compose(&s, &Screen::Cluster, PanelSize::W128xH64, Point::zero())
    );
}

#[test]
fn redraws_are_limited_to_max_fps() {
    let rec = RecordingI2c::new();
    let mut d = DisplayDriver::with_i2c(rec.clone(), DisplayConfig::default()); // 4 fps
    let t0 = Instant::now();
    let mut s = cluster_3_agents();
    assert_eq!(d.update(&s, t0), UpdateOutcome::Drawn);
    rec.take();
    s.agents_up = 2;
    assert_eq!(d.update(&s, t0 + ms(100)), UpdateOutcome::Throttled);
    assert_eq!(d.update(&s, t0 + ms(249)), UpdateOutcome::Throttled);
    assert!(rec.is_empty());
    assert_eq!(d.update(&s, t0 + ms(250)), UpdateOutcome::Drawn);
    assert!(!rec.is_empty());
    // Many changes within a second make at most 4 redraws.
    let drawn = (1..=20)
        .filter(|i| {
            s.agents_known = 3 + i;
            d.update(&s, t0 + secs(1) + ms(50) * *i) == UpdateOutcome::Drawn
        })
        .count();
    assert!(drawn <= 4, "{drawn} redraws in one second");
}

#[test]
fn screens_rotate_on_their_timer_while_a_job_runs() {
    let rec = RecordingI2c::new();
    let mut d = DisplayDriver::with_i2c(rec.clone(), DisplayConfig::default()); // 8 s
    let t0 = Instant::now();
    let s = pi_mid_job();
    d.update(&s, t0);
    // The job's screen first.
    assert_eq!(d.current_screen(), Some(Screen::Pi));
    assert_eq!(
        decode(&rec),
        compose(&s, &Screen::Pi, PanelSize::W128xH64, Point::zero())
    );
    assert_eq!(d.update(&s, t0 + ms(7_500)), UpdateOutcome::Unchanged);
    assert_eq!(d.current_screen(), Some(Screen::Pi));
    assert_eq!(d.update(&s, t0 + secs(8)), UpdateOutcome::Drawn);
    assert_eq!(d.current_screen(), Some(Screen::Cluster));
    assert_eq!(d.update(&s, t0 + secs(16)), UpdateOutcome::Drawn);
    assert_eq!(d.current_screen(), Some(Screen::Pi));

    // The job ends: back to the cluster alone, and it stays.
    let mut idle = s.clone();
    idle.job = None;
    d.update(&idle, t0 + secs(20));
    rec.take();
    for i in 3..6 {
        assert_eq!(d.update(&idle, t0 + secs(8 * i)), UpdateOutcome::Unchanged);
        assert_eq!(d.current_screen(), Some(Screen::Cluster));
    }
    assert!(rec.is_empty());
}

#[test]
fn picture_shifts_a_pixel_for_burn_in_after_its_interval() {
    let rec = RecordingI2c::new();
    let mut d = DisplayDriver::with_i2c(rec.clone(), DisplayConfig::default()); // 180 s
    let t0 = Instant::now();
    let s = cluster_3_agents();
    d.update(&s, t0);
    let before = decode(&rec);
    assert_eq!(d.update(&s, t0 + secs(179)), UpdateOutcome::Unchanged);
    assert_eq!(d.update(&s, t0 + secs(180)), UpdateOutcome::Drawn);
    let after = decode(&rec);
    assert_ne!(before, after);
    for (x, y, on) in before.iter() {
        if x < 127 {
            assert_eq!(after.get(x + 1, y), on, "pixel ({x},{y}) moved one right");
        }
    }
    // The shifts walk a small square and come back home.
    for i in 2..=4 {
        assert_eq!(d.update(&s, t0 + secs(180 * i)), UpdateOutcome::Drawn);
    }
    assert_eq!(decode(&rec), before);
}

#[test]
fn failing_panel_warns_once_and_retries_slowly_then_recovers() {
    let rec = RecordingI2c::new();
    rec.set_failing(true);
    let mut d = DisplayDriver::with_i2c(rec.clone(), DisplayConfig::default()); // retry 30 s
    let t0 = Instant::now();
    let s = cluster_3_agents();
    let (outcomes, logs) = capture_logs(|| {
        (0..=260) // 65 s at 4 calls a second
            .map(|i| d.update(&s, t0 + ms(250) * i))
            .collect::<Vec<_>>()
    });
    assert_eq!(outcomes[0], UpdateOutcome::Failed);
    let failed = outcomes
        .iter()
        .filter(|o| **o == UpdateOutcome::Failed)
        .count();
    assert_eq!(failed, 3, "tries at 0 s, 30 s and 60 s only");
    assert_eq!(rec.failed_attempts(), 3);
    assert_eq!(
        logs.matches("WARN").count(),
        1,
        "one warning per outage:\n{logs}"
    );
    assert!(
        logs.contains("0x3c"),
        "the warning names the address:\n{logs}"
    );

    rec.set_failing(false);
    let (outcome, logs) = capture_logs(|| d.update(&s, t0 + secs(90)));
    assert_eq!(outcome, UpdateOutcome::Drawn);
    assert!(logs.contains("answering again"), "{logs}");
    assert_eq!(decode(&rec), *d.frame().unwrap());

    // A second outage warns again, once.
    rec.set_failing(true);
    let mut s2 = s.clone();
    s2.agents_up = 1;
    let (_, logs) = capture_logs(|| {
        for i in 0..40 {
            d.update(&s2, t0 + secs(100) + secs(i));
        }
    });
    assert_eq!(logs.matches("WARN").count(), 1, "{logs}");
}

#[test]
fn auto_without_an_answering_panel_runs_headless_with_one_info_line() {
    let rec = RecordingI2c::new();
    rec.set_failing(true);
    let (mut d, logs) =
        capture_logs(|| DisplayDriver::probe_with_i2c(rec.clone(), DisplayConfig::default()));
    assert!(!d.has_panel());
    assert_eq!(logs.matches("INFO").count(), 1, "{logs}");
    assert_eq!(logs.matches("WARN").count(), 0, "{logs}");
    let (outcome, logs) = capture_logs(|| d.update(&cluster_3_agents(), Instant::now()));
    assert_eq!(outcome, UpdateOutcome::Headless);
    assert!(logs.is_empty(), "headless updates are silent: {logs}");
    assert!(d.frame().is_some(), "the picture is still there for --png");
    assert_eq!(rec.failed_attempts(), 1, "only the probe touched the bus");
}

#[test]
fn auto_with_an_answering_panel_uses_it() {
    let rec = RecordingI2c::new();
    let mut d = DisplayDriver::probe_with_i2c(rec.clone(), DisplayConfig::default());
    assert!(d.has_panel());
    assert_eq!(
        rec.transactions()[0].bytes,
        vec![0x00, 0xE3],
        "probe is a NOP"
    );
    assert_eq!(
        d.update(&cluster_3_agents(), Instant::now()),
        UpdateOutcome::Drawn
    );
}

#[test]
fn enabled_off_never_opens_a_bus() {
    let config = DisplayConfig {
        enabled: Enabled::Off,
        bus: 250, // would not exist anyway
        ..DisplayConfig::default()
    };
    let mut d = bramble_firmware::LinuxDisplayDriver::open(config);
    assert!(!d.has_panel());
    assert_eq!(
        d.update(&cluster_3_agents(), Instant::now()),
        UpdateOutcome::Headless
    );
}

#[test]
fn auto_on_a_machine_without_the_bus_runs_headless() {
    let config = DisplayConfig {
        bus: 250,
        ..DisplayConfig::default()
    };
    let (d, logs) = capture_logs(|| bramble_firmware::LinuxDisplayDriver::open(config));
    assert!(!d.has_panel());
    assert!(logs.contains("INFO") && !logs.contains("WARN"), "{logs}");
}

#[test]
fn panel_state_survives_a_json_round_trip_for_offline_rendering() {
    let s = pi_mid_job();
    let json = serde_json::to_string(&s).unwrap();
    let back: bramble_firmware::PanelState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
}

#[test]
fn the_driver_can_move_to_a_blocking_thread() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<bramble_firmware::LinuxDisplayDriver>();
    assert_send::<DisplayDriver<RecordingI2c>>();
}
