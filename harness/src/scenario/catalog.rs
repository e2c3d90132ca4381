//! Finding scenarios: by path or by name in a `scenarios/` folder, and listing them.
//!
//! The folders searched, in order: `./scenarios` of the current directory, then the workspace's
//! `scenarios/` (known at compile time, so `cargo run` works from any directory of the
//! checkout). The first folder holding a name wins.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use super::{Scenario, ScenarioError};
use crate::cli::ListArgs;

const FOLDER: &str = "scenarios";
const EXTENSION: &str = "toml";

/// The `scenarios/` folders that exist, in search order, each once. Paths under the current
/// directory are shown relative to it.
pub fn scenario_dirs() -> Vec<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|root| root.join(FOLDER));
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut seen = Vec::new();
    for dir in std::iter::once(PathBuf::from(FOLDER)).chain(workspace) {
        let Ok(canonical) = dir.canonicalize() else {
            continue;
        };
        if canonical.is_dir() && !seen.contains(&canonical) {
            dirs.push(relative_to_cwd(&canonical).unwrap_or(dir));
            seen.push(canonical);
        }
    }
    dirs
}

fn relative_to_cwd(path: &Path) -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok()?.canonicalize().ok()?;
    path.strip_prefix(cwd).ok().map(Path::to_path_buf)
}

/// The file a scenario argument stands for: an existing path, or anything ending in `.toml` or
/// holding a `/`, is a path; otherwise it is a name looked up as `<name>.toml` in
/// [`scenario_dirs`].
pub fn resolve(name_or_path: &str) -> Result<PathBuf, ScenarioError> {
    resolve_in(name_or_path, &scenario_dirs())
}

fn resolve_in(name_or_path: &str, dirs: &[PathBuf]) -> Result<PathBuf, ScenarioError> {
    let path = Path::new(name_or_path);
    if path.exists()
        || name_or_path.ends_with(".toml")
        || name_or_path.contains(std::path::MAIN_SEPARATOR)
        || name_or_path.contains('/')
    {
        return match std::fs::metadata(path) {
            Ok(_) => Ok(path.to_path_buf()),
            Err(source) => Err(ScenarioError::Read {
                path: path.to_path_buf(),
                source,
            }),
        };
    }
    for dir in dirs {
        let candidate = dir.join(format!("{name_or_path}.{EXTENSION}"));
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    let mut available: Vec<String> = dirs
        .iter()
        .flat_map(|d| scenario_files(d).unwrap_or_default())
        .map(|(name, _)| name)
        .collect();
    available.sort();
    available.dedup();
    Err(ScenarioError::NotFound {
        name: name_or_path.to_string(),
        searched: dirs.to_vec(),
        available,
    })
}

/// The `*.toml` files of a folder, by file stem.
pub fn scenario_files(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file()
            && path.extension().is_some_and(|e| e == EXTENSION)
            && let Some(stem) = path.file_stem()
        {
            files.push((stem.to_string_lossy().into_owned(), path));
        }
    }
    files.sort();
    Ok(files)
}

/// One line of `harness list`.
#[derive(Debug)]
pub struct Listed {
    /// What to pass to `harness run`: the file stem.
    pub name: String,
    pub path: PathBuf,
    /// The scenario, or why it cannot be used.
    pub scenario: Result<Scenario, ScenarioError>,
}

/// Every scenario in the folders, loaded and validated; a broken file is listed with its error.
/// A name in an earlier folder hides the same name in later ones.
pub fn catalog(dirs: &[PathBuf]) -> anyhow::Result<Vec<Listed>> {
    let mut by_name: BTreeMap<String, PathBuf> = BTreeMap::new();
    for dir in dirs {
        let files = scenario_files(dir)
            .with_context(|| format!("listing the scenario folder {}", dir.display()))?;
        for (name, path) in files {
            by_name.entry(name).or_insert(path);
        }
    }
    Ok(by_name
        .into_iter()
        .map(|(name, path)| {
            let scenario = Scenario::load(&path);
            Listed {
                name,
                path,
                scenario,
            }
        })
        .collect())
}

/// Formats the catalog as aligned `name  description` lines.
pub fn render(listed: &[Listed]) -> String {
    let width = listed.iter().map(|l| l.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for l in listed {
        let text = match &l.scenario {
            Ok(s) => s.description.get_ref().clone(),
            Err(e) => format!("error: {e}"),
        };
        out.push_str(&format!("{:<width$}  {text}\n", l.name));
    }
    out
}

/// `harness list`.
pub fn list(args: &ListArgs) -> anyhow::Result<ExitCode> {
    let dirs = match &args.dir {
        Some(dir) => vec![dir.clone()],
        None => scenario_dirs(),
    };
    if dirs.is_empty() {
        anyhow::bail!(
            "no {FOLDER}/ folder found in the current directory or the workspace; pass --dir"
        );
    }
    let listed = catalog(&dirs)?;
    let mut stdout = std::io::stdout().lock();
    if listed.is_empty() {
        let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        writeln!(stdout, "no scenarios in {}", shown.join(", "))?;
    } else {
        stdout.write_all(render(&listed).as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const VALID: &str = r#"
description = "a tiny scenario"
[load]
users = 1
duration = "1s"
[[load.journeys]]
name = "browse_catalog"
weight = 1
"#;

    #[test]
    fn a_name_resolves_in_the_first_folder_that_has_it_and_an_unknown_name_lists_the_others() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::write(a.path().join("smoke.toml"), VALID).unwrap();
        std::fs::write(b.path().join("smoke.toml"), VALID).unwrap();
        std::fs::write(b.path().join("steady.toml"), VALID).unwrap();
        let dirs = vec![a.path().to_path_buf(), b.path().to_path_buf()];

        assert_eq!(
            resolve_in("smoke", &dirs).unwrap(),
            a.path().join("smoke.toml")
        );
        assert_eq!(
            resolve_in("steady", &dirs).unwrap(),
            b.path().join("steady.toml")
        );
        let e = resolve_in("smok", &dirs).unwrap_err().to_string();
        assert!(e.contains("no scenario named \"smok\""), "{e}");
        assert!(e.contains("available: smoke, steady"), "{e}");
    }

    #[test]
    fn a_path_is_taken_as_it_is_and_a_missing_one_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mine.toml");
        std::fs::write(&file, VALID).unwrap();
        let arg = file.to_str().unwrap();
        assert_eq!(resolve_in(arg, &[]).unwrap(), file);
        let e = resolve_in("nowhere/else.toml", &[]).unwrap_err();
        assert!(matches!(e, ScenarioError::Read { .. }), "{e}");
    }

    #[test]
    fn the_list_shows_descriptions_aligned_and_broken_files_with_their_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a-long-name.toml"), VALID).unwrap();
        std::fs::write(
            dir.path().join("b.toml"),
            "description = \"x\"\nusers = 3\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.md"), "not a scenario").unwrap();
        let listed = catalog(&[dir.path().to_path_buf()]).unwrap();
        let out = render(&listed);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert_eq!(lines[0], "a-long-name  a tiny scenario");
        assert!(lines[1].starts_with("b            error: "), "{out}");
        assert!(lines[1].contains("b.toml:2:1: unknown field"), "{out}");
    }
}
