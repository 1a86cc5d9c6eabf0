//! Fixture-driven tests: every folder of `tests/fixtures/compose/` is one case, and its
//! `expected.snap` holds the loaded `Spec` as YAML, or the exact error text. A case that
//! loads also has `config.snap`: what `deploy config` prints for it.
//!
//! A case folder holds:
//! - `docker-compose.yml`, then any `docker-compose.*.yml` layered on it in name order;
//! - `interpolation.env` (optional): the variables for `${…}`;
//! - `deploy.yml` (optional): host settings whose `allow:` the policy check uses;
//! - any env or secret files the compose file names.
//!
//! The case folder is the project directory and its parent plays ROOT; both are replaced by
//! `ROOT/code` and `ROOT` in the snapshot so it reads the same on every machine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{LoadOptions, SourceFile, envfile, load, policy, render};
use crate::settings::Settings;

pub(crate) fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/compose")
}

/// A case's compose files, in layering order, read.
pub(crate) fn sources(case: &Path) -> Vec<SourceFile> {
    compose_files(case)
        .into_iter()
        .map(|path| SourceFile {
            text: std::fs::read_to_string(&path).unwrap(),
            path,
        })
        .collect()
}

/// A case's variables for `${…}` (`interpolation.env`) and host settings (`deploy.yml`).
pub(crate) fn host(case: &Path) -> (BTreeMap<String, String>, Settings) {
    let env = match std::fs::read_to_string(case.join("interpolation.env")) {
        Ok(text) => envfile::parse(&text)
            .unwrap()
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect(),
        Err(_) => BTreeMap::new(),
    };
    let settings = match std::fs::read_to_string(case.join("deploy.yml")) {
        Ok(text) => Settings::parse(&text, &case.join("deploy.yml")).unwrap(),
        Err(_) => Settings::default(),
    };
    (env, settings)
}

/// Every case folder, in name order.
pub(crate) fn cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("docker-compose.yml").is_file())
        .collect();
    cases.sort();
    cases
}

/// A case's `Spec` with its env files merged, as if the project lived in `project_dir`; `None`
/// when the case is one that does not load.
pub(crate) fn load_case(case: &Path, project_dir: &Path) -> Option<super::Spec> {
    let files = sources(case);
    let (env, settings) = host(case);
    let options = LoadOptions {
        project_dir,
        env: &env,
        profiles: &settings.profiles,
        read: &read_file,
    };
    let mut spec = load(&files, &options).ok()?.spec;
    envfile::merge_into(&mut spec, &env, |file| {
        let rel = file.path.strip_prefix(project_dir).unwrap_or(&file.path);
        Ok(std::fs::read_to_string(case.join(rel)).ok())
    })
    .ok()?;
    Some(spec)
}

/// A file a case's compose file names (`include:`, `extends.file`).
fn read_file(path: &Path) -> Result<Option<String>, String> {
    Ok(std::fs::read_to_string(path).ok())
}

fn compose_files(case: &Path) -> Vec<PathBuf> {
    let mut layered: Vec<PathBuf> = std::fs::read_dir(case)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("docker-compose.")
                && name.ends_with(".yml")
                && name != "docker-compose.yml"
        })
        .collect();
    layered.sort();
    let mut files = vec![case.join("docker-compose.yml")];
    files.extend(layered);
    files
}

/// Loads one case the way the pipeline will: compose files, then the policy. Returns the
/// `Spec` (or the error) and, when it loads, the `deploy config` output.
fn run_case(case: &Path) -> (String, Option<String>) {
    let root = case.parent().unwrap();
    let files = sources(case);
    let (env, settings) = host(case);
    let options = LoadOptions {
        project_dir: case,
        env: &env,
        profiles: &settings.profiles,
        read: &read_file,
    };
    let layout = policy::Layout {
        root: root.to_owned(),
        code: case.to_owned(),
        secrets: case.join(".secrets"),
        own: crate::root::Root::new(root.to_owned()).own_state(),
    };
    let host = policy::Host {
        layout: &layout,
        allow: &settings.allow,
        writable: &[],
        foreign: &policy::Foreign::default(),
        settings_file: &root.join("deploy.yml"),
    };
    let checked = load(&files, &options).map_err(|e| format!("error: {e}\n"));
    let checked = checked.and_then(|mut loaded| {
        policy::check(&loaded.spec, &host).map_err(|e| format!("refused:\n{e}\n"))?;
        envfile::merge_into(&mut loaded.spec, &env, |file| {
            Ok(std::fs::read_to_string(&file.path).ok())
        })
        .map_err(|e| format!("error: {e}\n"))?;
        Ok(loaded)
    });
    let (out, config) = match checked {
        Err(e) => (e, None),
        Ok(loaded) => {
            #[derive(Serialize)]
            struct Shown<'a> {
                name: Option<&'a str>,
                warnings: &'a [String],
                spec: &'a super::Spec,
            }
            let shown = serde_yaml::to_string(&Shown {
                name: loaded.name.as_ref().map(|n| n.as_str()),
                warnings: &loaded.warnings,
                spec: &loaded.spec,
            })
            .unwrap();
            let config = render::render(&loaded.spec, "project");
            (shown, Some(render::to_yaml(&config)))
        }
    };
    let portable = |s: String| {
        s.replace(&case.display().to_string(), "ROOT/code")
            .replace(&root.display().to_string(), "ROOT")
    };
    (portable(out), config.map(portable))
}

#[test]
fn compose_fixtures() {
    let cases = cases();
    assert!(
        !cases.is_empty(),
        "no fixtures found under {}",
        fixtures().display()
    );
    let mut failed = Vec::new();
    for case in &cases {
        let (output, config) = run_case(case);
        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_path(case);
        settings.set_prepend_module_to_snapshot(false);
        settings.set_omit_expression(true);
        settings.set_input_file(case.join("docker-compose.yml"));
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            settings.bind(|| {
                insta::assert_snapshot!("expected", output);
                if let Some(config) = config {
                    insta::assert_snapshot!("config", config);
                }
            });
        }));
        if outcome.is_err() {
            failed.push(case.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    assert!(
        failed.is_empty(),
        "fixtures whose output changed: {failed:?}"
    );
}

/// What `deploy config` prints is a compose file other tools read back: it must pass the
/// Compose Specification's JSON schema (`tests/fixtures/compose-spec/`, vendored as data),
/// for every fixture that loads.
#[test]
fn config_output_passes_the_compose_spec_schema() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/compose-spec");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("compose-spec.json")).unwrap())
            .unwrap();
    let validator = jsonschema::draft7::new(&schema).expect("the schema compiles");
    // The schema is enforced: a key compose does not know, or a wrong type, fails it.
    let bad = serde_json::json!({"services": {"web": {"image": "x", "colour": "red"}}});
    assert!(!validator.is_valid(&bad));
    assert!(!validator.is_valid(&serde_json::json!({"services": {"web": {"ports": 80}}})));
    let mut checked = 0;
    let mut failed = Vec::new();
    for case in cases() {
        let (_, Some(config)) = run_case(&case) else {
            continue;
        };
        let yaml: serde_yaml::Value = serde_yaml::from_str(&config).unwrap();
        let json = serde_json::to_value(&yaml).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&json)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        if !errors.is_empty() {
            let name = case.file_name().unwrap().to_string_lossy().into_owned();
            failed.push(format!("{name}:\n  {}", errors.join("\n  ")));
        }
        checked += 1;
    }
    assert!(checked >= 20, "too few fixtures load: {checked}");
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
