//! Board facts read from a fake root.

use std::fs;

use bramble_firmware::board::{self, BoardFacts};

fn write(root: &std::path::Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, bytes).unwrap();
}

#[test]
fn pi_facts_come_from_the_device_tree_and_thermal_zone() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "proc/device-tree/model",
        b"Raspberry Pi 4 Model B Rev 1.4\0",
    );
    write(
        dir.path(),
        "proc/device-tree/serial-number",
        b"10000000a1b2c3d4\0",
    );
    write(
        dir.path(),
        "sys/class/thermal/thermal_zone0/temp",
        b"48312\n",
    );
    let f = BoardFacts::read(dir.path());
    assert_eq!(f.model.as_deref(), Some("Raspberry Pi 4 Model B Rev 1.4"));
    assert_eq!(f.serial.as_deref(), Some("10000000a1b2c3d4"));
    assert!((f.temperature_c.unwrap() - 48.312).abs() < 1e-4);
}

#[test]
fn a_machine_without_them_has_no_facts_and_no_errors() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(board::model(dir.path()).unwrap(), None);
    assert_eq!(board::soc_temperature_c(dir.path()).unwrap(), None);
    assert_eq!(BoardFacts::read(dir.path()), BoardFacts::default());
}

#[test]
fn a_garbled_temperature_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "sys/class/thermal/thermal_zone0/temp", b"hot\n");
    let e = board::soc_temperature_c(dir.path()).unwrap_err();
    assert!(e.to_string().contains("thermal_zone0/temp"), "{e}");
    assert_eq!(BoardFacts::read(dir.path()).temperature_c, None);
}

#[test]
fn negative_temperatures_parse() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "sys/class/thermal/thermal_zone0/temp", b"-5500");
    assert_eq!(board::soc_temperature_c(dir.path()).unwrap(), Some(-5.5));
}
