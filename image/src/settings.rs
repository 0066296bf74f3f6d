//! Editing `bramble.toml` on a card's boot partition (at build and per card at flash) while
//! keeping whatever the user wrote in it: comments, order and other keys survive, only the
//! keys being set change. The result must still be a valid settings file.

use bramble_node::{self as node, NodeSettings, RoleSetting};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("bramble.toml on the boot partition is not valid TOML ({0}); fix or delete it")]
    Syntax(String),
    #[error("bramble.toml after editing: {0}")]
    Invalid(String),
}

/// The keys to set; `None` leaves a key as it is.
#[derive(Debug, Clone, Default)]
pub struct SettingsUpdate<'a> {
    pub cluster_name: Option<&'a str>,
    pub role: Option<RoleSetting>,
    pub hostname: Option<&'a str>,
}

/// `existing` (or the template when there is none) with `update` applied, and the settings
/// it now holds.
pub fn update(
    existing: Option<&str>,
    update: &SettingsUpdate<'_>,
) -> Result<(String, NodeSettings), SettingsError> {
    let text = match existing {
        None => node::settings_template(
            update.cluster_name.unwrap_or("bramble"),
            update.role.unwrap_or_default(),
            update.hostname.unwrap_or(""),
        ),
        Some(text) => {
            let mut doc: toml_edit::DocumentMut = text
                .parse()
                .map_err(|e: toml_edit::TomlError| SettingsError::Syntax(e.message().to_owned()))?;
            if let Some(name) = update.cluster_name {
                set_str(&mut doc, "cluster_name", name);
            }
            if let Some(role) = update.role {
                set_str(&mut doc, "role", role.as_str());
            }
            if let Some(h) = update.hostname {
                set_str(&mut doc, "hostname", h);
            }
            doc.to_string()
        }
    };
    let settings = node::parse_settings(Path::new("bramble.toml"), &text)
        .map_err(|e| SettingsError::Invalid(e.to_string()))?;
    Ok((text, settings))
}

/// Sets a top-level string, keeping the comment after the old value.
fn set_str(doc: &mut toml_edit::DocumentMut, key: &str, v: &str) {
    match doc.get_mut(key).and_then(toml_edit::Item::as_value_mut) {
        Some(old) => {
            let decor = old.decor().clone();
            *old = toml_edit::Value::from(v);
            *old.decor_mut() = decor;
        }
        None => doc[key] = toml_edit::value(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_comments_survive_and_keys_are_set_once() {
        let user = "# my shelf\nrole = \"auto\"   # decided later\nhostname = \"\"\n\n[display]\nrotation = 180\n";
        let up = SettingsUpdate {
            role: Some(RoleSetting::Master),
            hostname: Some("pi-7"),
            cluster_name: Some("shelf"),
        };
        let (text, s) = update(Some(user), &up).unwrap();
        assert!(
            text.starts_with("# my shelf\nrole = \"master\"   # decided later\n"),
            "{text}"
        );
        assert_eq!(text.matches("role =").count(), 1);
        assert_eq!(s.role, RoleSetting::Master);
        assert_eq!(s.hostname, "pi-7");
        assert_eq!(s.cluster_name, "shelf");
        assert_eq!(u16::from(s.display.rotation), 180);
        let (again, _) = update(Some(&text), &up).unwrap();
        assert_eq!(again, text);
    }

    #[test]
    fn missing_file_becomes_the_template_and_bad_values_are_refused() {
        let (text, s) = update(None, &SettingsUpdate::default()).unwrap();
        assert!(text.contains("# master | agent | auto"));
        assert_eq!(s, NodeSettings::default());
        let err = update(
            Some(&text),
            &SettingsUpdate {
                hostname: Some("no spaces allowed"),
                ..SettingsUpdate::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("hostname"), "{err}");
        assert!(matches!(
            update(Some("role = "), &SettingsUpdate::default()),
            Err(SettingsError::Syntax(_))
        ));
    }
}
