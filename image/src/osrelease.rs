//! Which Debian the base image is, from its `/etc/os-release`, and whether Bramble runs on
//! it. The binaries are linked against glibc 2.34 or newer, which means Debian 12
//! (Bookworm) and newer, i.e. Raspberry Pi OS Bookworm (and Trixie) arm64.

use std::collections::BTreeMap;

/// Debian releases too old for our binaries (glibc older than 2.34).
const TOO_OLD: [(&str, u32); 5] = [
    ("jessie", 8),
    ("stretch", 9),
    ("buster", 10),
    ("bullseye", 11),
    ("wheezy", 7),
];

/// The key/value pairs of an os-release file (quotes removed).
pub fn parse(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.starts_with('#') {
                return None;
            }
            let (k, v) = l.split_once('=')?;
            Some((
                k.trim().to_owned(),
                v.trim().trim_matches('"').trim_matches('\'').to_owned(),
            ))
        })
        .collect()
}

/// The release as people say it: PRETTY_NAME, else NAME + VERSION.
pub fn describe(fields: &BTreeMap<String, String>) -> String {
    fields.get("PRETTY_NAME").cloned().unwrap_or_else(|| {
        format!(
            "{} {}",
            fields.get("NAME").map(String::as_str).unwrap_or("unknown"),
            fields.get("VERSION").map(String::as_str).unwrap_or("")
        )
        .trim()
        .to_owned()
    })
}

/// `Ok` for Bookworm and newer; otherwise the message to show.
pub fn check_supported(text: &str) -> Result<(), String> {
    let fields = parse(text);
    let codename = fields
        .get("VERSION_CODENAME")
        .or_else(|| fields.get("DEBIAN_CODENAME"))
        .map(|s| s.to_lowercase());
    let version: Option<u32> = fields
        .get("VERSION_ID")
        .and_then(|v| v.split('.').next())
        .and_then(|v| v.parse().ok());
    let debian_like = ["ID", "ID_LIKE"].iter().any(|k| {
        fields.get(*k).is_some_and(|v| {
            v.split_whitespace()
                .any(|w| w == "debian" || w == "raspbian")
        })
    });
    let old = codename
        .as_deref()
        .and_then(|c| TOO_OLD.iter().find(|(name, _)| *name == c))
        .map(|(name, n)| format!("Debian {n} ({name})"))
        .or_else(|| {
            version
                .filter(|v| debian_like && *v < 12)
                .map(|v| format!("Debian {v}"))
        });
    let refuse = |what: String| {
        Err(format!(
            "the base image is {what}: Bramble's binaries need glibc 2.34 or newer, so the base \
             must be Raspberry Pi OS Bookworm (Debian 12) or newer, arm64"
        ))
    };
    if let Some(old) = old {
        return refuse(old);
    }
    if !debian_like {
        return refuse(format!("{} (not Debian-based)", describe(&fields)));
    }
    if codename.is_none() && version.is_none() {
        return refuse(format!("{} (release unknown)", describe(&fields)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bookworm_and_newer_pass_older_fail_with_the_reason() {
        let bookworm = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\nID=debian\n";
        assert_eq!(check_supported(bookworm), Ok(()));
        let trixie = "PRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\nVERSION_ID=\"13\"\nVERSION_CODENAME=trixie\nID=debian\n";
        assert_eq!(check_supported(trixie), Ok(()));
        let sid =
            "PRETTY_NAME=\"Debian GNU/Linux trixie/sid\"\nVERSION_CODENAME=trixie\nID=debian\n";
        assert_eq!(check_supported(sid), Ok(()));
        let bullseye = "PRETTY_NAME=\"Raspbian GNU/Linux 11 (bullseye)\"\nVERSION_ID=\"11\"\nVERSION_CODENAME=bullseye\nID=raspbian\nID_LIKE=debian\n";
        let err = check_supported(bullseye).unwrap_err();
        assert!(
            err.starts_with("the base image is Debian 11 (bullseye): "),
            "{err}"
        );
        assert!(
            err.contains("glibc 2.34") && err.contains("Bookworm"),
            "{err}"
        );
        let fedora = "NAME=Fedora\nVERSION_ID=40\nID=fedora\n";
        assert!(check_supported(fedora)
            .unwrap_err()
            .contains("not Debian-based"));
    }
}
