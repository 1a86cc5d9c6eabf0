//! The config hash, pinned: for every service of every loadable compose fixture, the hash of
//! its container. A change to how a setting enters the hash changes the hash of containers
//! that did not change, and the next deploy would replace them all, the database included;
//! this test fails first. See `container::HASH_VERSION`.

use std::path::Path;

use crate::compose::tests;
use crate::ids::{ProjectName, Revision};

use super::container::{self, Context, Publish};

/// Where the fixtures pretend to live, so hashes (which cover mount paths) do not depend on
/// where the repository is checked out.
const PROJECT_DIR: &str = "/srv/app/code";

/// `service: hash` for each service of the case, or `None` when the case does not load.
fn hashes(case: &Path) -> Option<String> {
    let spec = tests::load_case(case, Path::new(PROJECT_DIR))?;
    let project = ProjectName::parse("shop").unwrap();
    let revision = Revision::parse(&"ab".repeat(20)).unwrap();
    let mut out = String::new();
    for publish in [Publish::Direct, Publish::Proxied] {
        let build_keys = spec
            .services
            .iter()
            .filter(|(_, s)| s.build.is_some())
            .map(|(n, _)| (n.clone(), format!("key-of-{n}")))
            .collect();
        let ctx = Context {
            spec: &spec,
            project: &project,
            revision: &revision,
            config_dir: Path::new("/srv/app/configs"),
            publish,
            build_keys: &build_keys,
            hosts: None,
        };
        for (name, svc) in &spec.services {
            if let Some(c) = container::spec(&ctx, name, svc) {
                out.push_str(&format!("{publish:?} {name}: {}\n", c.config_hash));
            }
        }
    }
    Some(out)
}

#[test]
fn config_hashes_of_the_fixtures_do_not_move() {
    let mut all = String::new();
    for case in &tests::cases() {
        if let Some(h) = hashes(case) {
            all.push_str(&format!(
                "# {}\n{h}",
                case.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    assert!(all.lines().count() > 40, "too few services to pin: {all}");
    insta::with_settings!({snapshot_path => tests::fixtures(), prepend_module_to_snapshot => false, omit_expression => true}, {
        insta::assert_snapshot!("config-hashes", all);
    });
}
