//! `bramble new framework NAME [--executor]`: writes a ready framework crate (Cargo.toml on
//! `bramble-sdk`, a scheduler that launches one task per offer, optionally a custom executor,
//! a README, and tests written with the SDK's test kit) from the templates in
//! `cli/templates/framework/`, which are compiled into this binary.

use std::fs;
use std::path::{Path, PathBuf};

const CARGO_TOML: &str = include_str!("../templates/framework/Cargo.toml.tmpl");
const MAIN_RS: &str = include_str!("../templates/framework/main.rs.tmpl");
const LIB_RS: &str = include_str!("../templates/framework/lib.rs.tmpl");
const SCHEDULER_RS: &str = include_str!("../templates/framework/scheduler.rs.tmpl");
const EXECUTOR_RS: &str = include_str!("../templates/framework/executor.rs.tmpl");
const TEST_RS: &str = include_str!("../templates/framework/test.rs.tmpl");
const README_MD: &str = include_str!("../templates/framework/README.md.tmpl");

/// The SDK of the source tree this binary was built from, when it is still there.
pub fn default_sdk_path() -> Option<PathBuf> {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk"))
        .canonicalize()
        .ok()
}

#[derive(Debug, thiserror::Error)]
pub enum NewError {
    #[error(
        "{0:?} is not a usable framework name: use lowercase letters, digits and '-', starting \
         with a letter, at most 64 characters (it becomes the crate and binary name)"
    )]
    BadName(String),
    #[error("{0} already exists; choose another name or directory")]
    Exists(PathBuf),
    #[error(
        "no bramble-sdk at {0} (it is not on crates.io): pass --sdk with the sdk/ directory of a \
         Bramble source checkout"
    )]
    NoSdk(PathBuf),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What `generate` wrote.
#[derive(Debug)]
pub struct Generated {
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
}

/// Writes the crate `name` into `parent/name`, depending on the SDK at `sdk`.
pub fn generate(
    parent: &Path,
    name: &str,
    executor: bool,
    sdk: &Path,
) -> Result<Generated, NewError> {
    check_name(name)?;
    if !sdk.join("Cargo.toml").is_file() {
        return Err(NewError::NoSdk(sdk.to_path_buf()));
    }
    let dir = parent.join(name);
    if dir.exists() {
        return Err(NewError::Exists(dir));
    }
    let vars = Vars::new(name, executor, sdk);
    let mut files = vec![
        ("Cargo.toml", CARGO_TOML),
        ("README.md", README_MD),
        ("src/main.rs", MAIN_RS),
        ("src/lib.rs", LIB_RS),
        ("src/scheduler.rs", SCHEDULER_RS),
        ("tests/scheduler.rs", TEST_RS),
    ];
    if executor {
        files.push(("src/executor.rs", EXECUTOR_RS));
    }
    let mut written = Vec::new();
    for (rel, template) in files {
        let path = dir.join(rel);
        let write = |path: &Path| -> std::io::Result<()> {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::write(path, vars.fill(template))
        };
        write(&path).map_err(|source| NewError::Write {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(Generated {
        dir,
        files: written,
    })
}

fn check_name(name: &str) -> Result<(), NewError> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(NewError::BadName(name.to_string()))
    }
}

/// The placeholders the templates use.
struct Vars {
    pairs: Vec<(&'static str, String)>,
}

impl Vars {
    fn new(name: &str, executor: bool, sdk: &Path) -> Self {
        let krate = name.replace('-', "_");
        let ty: String = name
            .split('-')
            .map(|part| {
                let mut chars = part.chars();
                chars
                    .next()
                    .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                    .unwrap_or_default()
            })
            .collect();
        let (usage, dispatch, info, and, module, readme) = if executor {
            (
                "; `{{name}} executor` is its executor, which the agents start".replace("{{name}}", name),
                format!(
                    "    if args.first().map(String::as_str) == Some(\"executor\") {{\n        \
                     runtime.block_on(bramble_sdk::run_executor({krate}::executor::{ty}Executor))?;\n        \
                     return Ok(());\n    }}\n"
                ),
                format!(
                    "Some(bramble_sdk::ExecutorInfo {{\n            executor_id: \"{name}-executor\".into(),\n            \
                     name: \"{name} executor\".into(),\n            \
                     command: bramble_sdk::CommandInfo::program(\n                \
                     std::env::current_exe()?.display().to_string(),\n                \
                     vec![\"executor\".into()],\n            ),\n            \
                     resources: bramble_sdk::Resources::new(0.1, 32),\n        }})"
                ),
                " and its executor".to_string(),
                "pub mod executor;\n".to_string(),
                ", each run by its own executor (`src/executor.rs`, the same binary started as `executor`)".to_string(),
            )
        } else {
            (
                String::new(),
                String::new(),
                "None".to_string(),
                String::new(),
                String::new(),
                ", each a shell command the agent runs".to_string(),
            )
        };
        Self {
            pairs: vec![
                ("{{executor_usage}}", usage),
                ("{{executor_dispatch}}", dispatch),
                ("{{executor_info}}", info),
                ("{{executor_and}}", and),
                ("{{executor_mod}}", module),
                ("{{executor_readme}}", readme),
                ("{{name}}", name.to_string()),
                ("{{crate}}", krate),
                ("{{Type}}", ty),
                ("{{sdk}}", sdk.display().to_string()),
            ],
        }
    }

    fn fill(&self, template: &str) -> String {
        self.pairs
            .iter()
            .fold(template.to_string(), |text, (key, value)| {
                text.replace(key, value)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_crate_and_type_names() {
        let v = Vars::new("my-pi-fw", false, Path::new("/x/sdk"));
        assert_eq!(
            v.fill("{{name}} {{crate}} {{Type}} {{sdk}}"),
            "my-pi-fw my_pi_fw MyPiFw /x/sdk"
        );
    }

    #[test]
    fn bad_names_are_refused_with_the_rule() {
        for bad in [
            "",
            "My",
            "1fw",
            "a/b",
            "../x",
            "fw-",
            "a b",
            &"x".repeat(65),
        ] {
            let err = check_name(bad).unwrap_err().to_string();
            assert!(err.contains("lowercase letters"), "{bad}: {err}");
        }
        check_name("hello-fw2").unwrap();
    }

    #[test]
    fn nothing_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let sdk = default_sdk_path().expect("built from a source tree");
        generate(dir.path(), "fw", true, &sdk).unwrap();
        let again = generate(dir.path(), "fw", false, &sdk).unwrap_err();
        assert!(matches!(again, NewError::Exists(_)), "{again}");
    }

    #[test]
    fn every_placeholder_is_filled() {
        let dir = tempfile::tempdir().unwrap();
        let sdk = default_sdk_path().expect("built from a source tree");
        for (name, executor) in [("with-exec", true), ("plain", false)] {
            let g = generate(dir.path(), name, executor, &sdk).unwrap();
            for f in g.files {
                let text = fs::read_to_string(&f).unwrap();
                assert!(
                    !text.contains("{{"),
                    "{} has an unfilled placeholder",
                    f.display()
                );
            }
        }
    }
}
