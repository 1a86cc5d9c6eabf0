//! Table tests of `plan::plan`: what it decides for each service given what runs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::container::Publish;
use super::*;
use crate::compose::spec::{Build, Dependency, Service};

fn name(s: &str) -> ServiceName {
    ServiceName::parse(s).unwrap()
}

fn project() -> ProjectName {
    ProjectName::parse("shop").unwrap()
}

fn revision(c: char) -> Revision {
    Revision::parse(&c.to_string().repeat(40)).unwrap()
}

/// `db` (postgres), `web` (built, waits for `db` healthy), `worker` (built, waits for `web`).
fn spec() -> Spec {
    let mut spec = Spec::default();
    let image = |image: &str| Service {
        image: Some(image.to_owned()),
        ..Service::default()
    };
    let built = |waits: &str, condition| {
        let mut s = Service {
            build: Some(Build {
                context: PathBuf::from("/srv/app/code"),
                dockerfile: "Dockerfile".to_owned(),
                ..Build::default()
            }),
            ..Service::default()
        };
        s.depends_on.insert(
            name(waits),
            Dependency {
                condition,
                restart: false,
                required: true,
            },
        );
        s
    };
    spec.services.insert(name("db"), image("postgres:15"));
    spec.services
        .insert(name("web"), built("db", Condition::ServiceHealthy));
    spec.services
        .insert(name("worker"), built("web", Condition::ServiceStarted));
    spec.networks
        .insert("default".to_owned(), Default::default());
    spec
}

fn options() -> PlanOptions {
    PlanOptions {
        config_dir: PathBuf::from("/srv/app/configs"),
        publish: Publish::Direct,
        build_keys: BTreeMap::new(),
        hosts: None,
    }
}

/// What runs: one container per (service, name, running), with the config hash the plan of
/// `spec` at `revision` gives it, or another hash when `changed`.
fn running(spec: &Spec, at: &Revision, containers: &[(&str, &str, bool, bool)]) -> Observed {
    let first = plan(spec, &project(), at, &Observed::default(), &options()).unwrap();
    let hash = |service: &str| {
        first
            .services
            .iter()
            .find(|s| s.service.as_str() == service)
            .map(|s| s.container.config_hash.clone())
    };
    Observed {
        containers: containers
            .iter()
            .enumerate()
            .map(
                |(i, (service, container, running, changed))| ObservedContainer {
                    id: format!("id{i}"),
                    name: (*container).to_owned(),
                    service: ServiceName::parse(service).ok(),
                    revision: Some(at.to_string()),
                    config_hash: if *changed {
                        Some("0ld".to_owned())
                    } else {
                        hash(service)
                    },
                    running: *running,
                    replica: 1,
                },
            )
            .collect(),
        ..Observed::default()
    }
}

fn actions(plan: &Plan) -> Vec<(String, String)> {
    plan.services
        .iter()
        .map(|s| {
            let action = match &s.action {
                Action::Create => "create".to_owned(),
                Action::Replace(old) => format!("replace {}", old.name),
                Action::Keep(old) => format!("keep {}", old.name),
            };
            (s.service.to_string(), action)
        })
        .collect()
}

#[test]
fn a_first_deploy_creates_everything_in_dependency_order() {
    let spec = spec();
    let plan = plan(
        &spec,
        &project(),
        &revision('a'),
        &Observed::default(),
        &options(),
    )
    .unwrap();
    assert_eq!(
        actions(&plan),
        [
            ("db".to_owned(), "create".to_owned()),
            ("web".to_owned(), "create".to_owned()),
            ("worker".to_owned(), "create".to_owned()),
        ]
    );
    assert_eq!(plan.builds.len(), 2, "one image per built service");
    assert_eq!(plan.networks[0].action, Ensure::Create);
}

/// The database's configuration did not change: it keeps running; a stopped one is kept and
/// started again; a changed one is replaced. Built services at a new revision are replaced.
#[test]
fn unchanged_containers_are_kept_changed_ones_replaced() {
    let spec = spec();
    let (old, new) = (revision('a'), revision('b'));
    let table = [
        // (db running, db changed, what the plan does with db)
        (true, false, "keep shop-db"),
        (false, false, "keep shop-db"),
        (true, true, "replace shop-db"),
    ];
    for (db_running, db_changed, want) in table {
        let observed = running(
            &spec,
            &old,
            &[
                ("db", "shop-db", db_running, db_changed),
                ("web", "shop-web-aaaaaaaaaaaa", true, false),
                ("worker", "shop-worker-aaaaaaaaaaaa", true, false),
            ],
        );
        let plan = plan(&spec, &project(), &new, &observed, &options()).unwrap();
        let got = actions(&plan);
        assert_eq!(got[0], ("db".to_owned(), want.to_owned()), "{got:?}");
        assert_eq!(got[1].1, "replace shop-web-aaaaaaaaaaaa", "{got:?}");
        assert_eq!(got[2].1, "replace shop-worker-aaaaaaaaaaaa", "{got:?}");
    }
}

/// A container whose service left the file is an orphan (removed after success); a second
/// container of a service, or one parked by an interrupted swap, is a leftover (removed
/// before anything starts); the running one, not the parked one, is the service's current.
#[test]
fn orphans_and_leftovers_are_told_apart() {
    let spec = spec();
    let at = revision('a');
    let observed = running(
        &spec,
        &at,
        &[
            ("db", "shop-db.replaced", false, false),
            ("db", "shop-db", true, false),
            ("web", "shop-web-aaaaaaaaaaaa", true, false),
            ("web", "shop-web-bbbbbbbbbbbb", false, false),
            ("cache", "shop-cache", true, false),
        ],
    );
    let plan = plan(&spec, &project(), &at, &observed, &options()).unwrap();
    let names = |list: &[ObservedContainer]| -> Vec<String> {
        list.iter().map(|c| c.name.clone()).collect()
    };
    assert_eq!(names(&plan.orphans), ["shop-cache"]);
    assert_eq!(
        names(&plan.leftovers),
        ["shop-db.replaced", "shop-web-bbbbbbbbbbbb"]
    );
    assert_eq!(
        actions(&plan)[0],
        ("db".to_owned(), "keep shop-db".to_owned())
    );
}

/// A network labelled as the project's that the file no longer declares is removed after a
/// success; an external one that does not exist stops the deploy before anything starts.
#[test]
fn orphan_networks_and_missing_externals() {
    let mut spec = spec();
    spec.networks.insert(
        "outside".to_owned(),
        crate::compose::spec::Network {
            external: true,
            ..Default::default()
        },
    );
    let observed = Observed {
        project_networks: ["shop_default".to_owned(), "shop_gone".to_owned()].into(),
        networks: ["shop_default".to_owned(), "shop_gone".to_owned()].into(),
        ..Observed::default()
    };
    let plan = plan(&spec, &project(), &revision('a'), &observed, &options()).unwrap();
    assert_eq!(plan.orphan_networks, ["shop_gone"]);
    let ensure: Vec<(String, Ensure)> = plan
        .networks
        .iter()
        .map(|n| (n.name.clone(), n.action))
        .collect();
    assert_eq!(
        ensure,
        [
            ("shop_default".to_owned(), Ensure::Exists),
            ("outside".to_owned(), Ensure::MissingExternal),
        ]
    );
}

/// An image built earlier for this revision, or for an identical tree (same build key), is
/// reused instead of built.
#[test]
fn built_images_are_reused_by_revision_or_build_key() {
    let spec = spec();
    let at = revision('b');
    let mut options = options();
    options.build_keys.insert(name("web"), "k1".to_owned());
    let observed = Observed {
        images: ["shop-web:build-k1".to_owned(), format!("shop-worker:{at}")].into(),
        ..Observed::default()
    };
    let plan = plan(&spec, &project(), &at, &observed, &options).unwrap();
    assert!(plan.builds.is_empty(), "{:?}", plan.builds);
    let reused: Vec<&str> = plan.reused.iter().map(|r| r.from.as_str()).collect();
    assert_eq!(
        reused,
        ["shop-web:build-k1".to_owned(), format!("shop-worker:{at}")]
    );
}

/// What a plan leaves running once applied: one running container per step.
fn applied(plan: &Plan) -> Observed {
    Observed {
        containers: (plan.services.iter().enumerate())
            .map(|(i, s)| ObservedContainer {
                id: format!("id{i}"),
                name: s.container.name.clone(),
                service: Some(s.service.clone()),
                revision: Some(plan.revision.to_string()),
                config_hash: s.container.labels.get(names::LABEL_CONFIG_HASH).cloned(),
                running: true,
                replica: s.replica,
            })
            .collect(),
        ..Observed::default()
    }
}

fn with_replicas(spec: &Spec, service: &str, n: u32) -> Spec {
    let mut spec = spec.clone();
    spec.services.get_mut(&name(service)).unwrap().replicas = Some(n);
    spec
}

/// Each replica is its own container, named and labelled so that the next plan pairs it
/// with its successor; scaling up keeps the running ones, scaling down removes the extra
/// ones after success (orphans), and a new revision replaces each.
#[test]
fn replicas_are_planned_one_container_each() {
    let three = with_replicas(&spec(), "web", 3);
    let (a, b) = (revision('a'), revision('b'));
    let first = plan(&three, &project(), &a, &Observed::default(), &options()).unwrap();
    let web: Vec<(u32, &str)> = (first.services.iter())
        .filter(|s| s.service.as_str() == "web")
        .map(|s| (s.replica, s.container.name.as_str()))
        .collect();
    assert_eq!(
        web,
        [
            (1, "shop-web-aaaaaaaaaaaa"),
            (2, "shop-web-aaaaaaaaaaaa-2"),
            (3, "shop-web-aaaaaaaaaaaa-3")
        ]
    );
    let labels = |s: &ServiceStep| s.container.labels.get(names::LABEL_REPLICA).cloned();
    let replica_labels: Vec<_> = first.services[1..4].iter().map(labels).collect();
    assert_eq!(replica_labels, [None, Some("2".into()), Some("3".into())]);

    let running = applied(&first);
    let again = plan(&three, &project(), &a, &running, &options()).unwrap();
    assert!(!again.changes_containers(), "{again}");

    let four = with_replicas(&spec(), "web", 4);
    let up = plan(&four, &project(), &a, &running, &options()).unwrap();
    let web: Vec<String> = actions(&up)[1..5].iter().map(|(_, a)| a.clone()).collect();
    assert_eq!(
        web,
        [
            "keep shop-web-aaaaaaaaaaaa",
            "keep shop-web-aaaaaaaaaaaa-2",
            "keep shop-web-aaaaaaaaaaaa-3",
            "create"
        ]
    );

    let one = with_replicas(&spec(), "web", 1);
    let down = plan(&one, &project(), &a, &running, &options()).unwrap();
    let orphans: Vec<&str> = down.orphans.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        orphans,
        ["shop-web-aaaaaaaaaaaa-2", "shop-web-aaaaaaaaaaaa-3"]
    );
    assert!(down.leftovers.is_empty());
    assert_eq!(
        down.why_removed(&down.orphans[0]),
        "its service runs 1 replica(s) now"
    );

    let next = plan(&three, &project(), &b, &running, &options()).unwrap();
    let web: Vec<String> = actions(&next)[1..4]
        .iter()
        .map(|(_, a)| a.clone())
        .collect();
    assert_eq!(
        web,
        [
            "replace shop-web-aaaaaaaaaaaa",
            "replace shop-web-aaaaaaaaaaaa-2",
            "replace shop-web-aaaaaaaaaaaa-3"
        ]
    );
    assert!(next.services[1..4].iter().all(|s| s.start_first));
}

/// Replicas cannot share one fixed host port: without the daemon the plan says to run
/// `deploy serve`; behind it, the built service's port is the proxy's and all is well.
#[test]
fn replicas_with_a_fixed_host_port_need_the_proxy() {
    let mut spec = with_replicas(&spec(), "web", 3);
    spec.services.get_mut(&name("web")).unwrap().ports = vec![crate::compose::spec::Port {
        target: 80,
        published: Some(8080),
        published_end: None,
        host_ip: None,
        protocol: crate::compose::spec::Protocol::Tcp,
    }];
    let err = plan(
        &spec,
        &project(),
        &revision('a'),
        &Observed::default(),
        &options(),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "services.web: its 3 replicas cannot all bind host port 8080, only one container can; run `deploy serve`: its proxy owns the port and balances across the replicas"
    );
    let proxied = PlanOptions {
        publish: Publish::Proxied,
        ..options()
    };
    let plan = plan(
        &spec,
        &project(),
        &revision('a'),
        &Observed::default(),
        &proxied,
    )
    .unwrap();
    assert_eq!(plan.services.len(), 5);
}

/// `update_config.order` decides whether a replacement starts first, except where two
/// containers cannot run side by side (a database, a fixed host port).
#[test]
fn update_order_is_honoured_where_it_applies() {
    use crate::compose::spec::UpdateOrder;
    let mut spec = spec();
    spec.services.get_mut(&name("web")).unwrap().update_order = Some(UpdateOrder::StopFirst);
    spec.services.get_mut(&name("db")).unwrap().update_order = Some(UpdateOrder::StartFirst);
    let plan = plan(
        &spec,
        &project(),
        &revision('a'),
        &Observed::default(),
        &options(),
    )
    .unwrap();
    let start_first: Vec<(String, bool)> = (plan.services.iter())
        .map(|s| (s.service.to_string(), s.start_first))
        .collect();
    assert_eq!(
        start_first,
        [
            ("db".to_owned(), false),
            ("web".to_owned(), false),
            ("worker".to_owned(), true)
        ]
    );
}

/// A chosen MAC address, like a fixed port, cannot be held by the replacement and its
/// predecessor at once: the predecessor stops first.
#[test]
fn a_fixed_mac_address_stops_the_predecessor_first() {
    let mut spec = spec();
    let worker = spec.services.get_mut(&name("worker")).unwrap();
    worker.update_order = Some(crate::compose::spec::UpdateOrder::StartFirst);
    worker.options.mac_address = Some("06:00:5e:00:00:42".into());
    let plan = plan(
        &spec,
        &project(),
        &revision('a'),
        &Observed::default(),
        &options(),
    )
    .unwrap();
    let worker = plan
        .services
        .iter()
        .find(|s| s.service.as_str() == "worker");
    assert!(!worker.unwrap().start_first);
}
