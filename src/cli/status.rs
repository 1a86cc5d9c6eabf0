//! `deploy status`: the live revision, who deployed it and when, and each container.

use serde::Serialize;

use crate::docker;
use crate::ledger::{Deployment, Ledger};
use crate::root::Root;
use crate::settings::Settings;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
pub(crate) struct Status {
    /// `deploy`'s own version and commit.
    pub(crate) version: &'static str,
    pub(crate) project: String,
    /// The environment shown (`--env`; `production` without it).
    pub(crate) environment: String,
    /// When, by whom and why the environment was torn down, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    torn_down: Option<(chrono::DateTime<chrono::Utc>, String, String)>,
    pub(crate) live: Option<Deployment>,
    /// The deploy under way, with its `stage`, if one runs.
    pub(crate) running: Option<Deployment>,
    /// Deploys waiting their turn, oldest first.
    pub(crate) queued: Vec<Deployment>,
    pub(crate) containers: Vec<docker::status::ContainerStatus>,
    /// The newest database dump, if any.
    backup: Option<NewestBackup>,
    build_cache: BuildCache,
    /// The newest notification that failed and was not delivered since.
    notify_failure: Option<crate::ledger::Failure>,
    /// deploy.yml's hostnames, and whether a certificate serves each over HTTPS.
    hostnames: Vec<Hostname>,
    /// Where `deploy serve` looks for the operator's certificates (with hostnames only).
    #[serde(skip_serializing_if = "Option::is_none")]
    certs_dir: Option<std::path::PathBuf>,
}

#[derive(Serialize)]
struct Hostname {
    hostname: String,
    https: bool,
    /// Days until the certificate that serves it expires.
    expires_in_days: Option<i64>,
}

/// Below this many days left, `deploy status` warns about a certificate.
const EXPIRY_WARNING_DAYS: i64 = 14;

/// Each hostname, with HTTPS when a file of the certificates directory (`deploy serve`'s,
/// from /etc/deploy/serve.yml) covers it.
/// Also returns the operator's certificates directory, when there are hostnames.
fn hostnames(
    root: &Root,
    settings: &Settings,
) -> anyhow::Result<(Vec<Hostname>, Option<std::path::PathBuf>)> {
    if settings.hostnames.is_empty() {
        return Ok((Vec::new(), None));
    }
    let dir = crate::serve::config::ServeConfig::load()?.certs;
    let dirs = crate::serve::acme::cert_dirs(&dir, std::slice::from_ref(root));
    let certs = crate::serve::proxy::tls::Certs::load(&dirs);
    let now = chrono::Utc::now().timestamp();
    let hosts = (settings.hostnames.iter())
        .map(|h| Hostname {
            hostname: h.clone(),
            https: certs.covers(h),
            expires_in_days: certs.not_after(h).map(|end| (end - now).div_euclid(86_400)),
        })
        .collect();
    Ok((hosts, Some(dir)))
}

#[derive(Serialize)]
struct NewestBackup {
    file: String,
    taken_at: chrono::DateTime<chrono::Utc>,
    age_seconds: i64,
    /// Older than `backup_schedule` allows, plus two hours.
    overdue: bool,
}

/// `42s`, `17m`, `5h12m`, `3d4h`.
fn age(secs: i64) -> String {
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    if secs < 60 {
        format!("{}s", secs.max(0))
    } else if secs < 3600 {
        format!("{m}m")
    } else if secs < 86400 {
        format!("{h}h{:02}m", m % 60)
    } else {
        format!("{d}d{}h", h % 24)
    }
}

/// How late a scheduled dump may be before `deploy status` warns.
const OVERDUE_GRACE: chrono::TimeDelta = chrono::TimeDelta::hours(2);

async fn newest_backup(
    ledger: &Ledger,
    settings: &Settings,
) -> anyhow::Result<Option<NewestBackup>> {
    let Some(newest) = ledger.backups().await?.into_iter().next() else {
        return Ok(None);
    };
    let age = chrono::Utc::now() - newest.taken_at;
    let overdue = settings.backup_schedule.is_some_and(|every| {
        chrono::TimeDelta::from_std(every).is_ok_and(|every| age > every + OVERDUE_GRACE)
    });
    Ok(Some(NewestBackup {
        file: newest.dump.file,
        taken_at: newest.dump.taken_at,
        age_seconds: age.num_seconds(),
        overdue,
    }))
}

/// BuildKit's cache, which the engine shares among every project it builds.
#[derive(Serialize)]
struct BuildCache {
    /// Bytes it holds now; `null` when the engine could not tell (it answers one disk usage
    /// question at a time).
    size: Option<u64>,
    /// `build_cache` in deploy.yml: what a deploy prunes it down to.
    limit: u64,
}

pub(crate) async fn run(root: Root, args: Args) -> anyhow::Result<u8> {
    super::settle(&root).await;
    let settings = Settings::load(&root)?;
    let ledger = Ledger::open(&root.ledger_file()).await?;
    let status = gather(&root, &settings, &ledger).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print(&status, &settings);
    }
    Ok(super::exit::SUCCESS)
}

/// What `deploy status` shows (and the dashboard's `/api/status`).
pub(crate) async fn gather(
    root: &Root,
    settings: &Settings,
    ledger: &Ledger,
) -> anyhow::Result<Status> {
    let project = settings.project(root)?;
    let (hostnames, certs_dir) = hostnames(root, settings)?;
    let live = ledger.last_succeeded().await?;
    // Settled first (`settle`), or by the daemon: what is running or queued now is real.
    let running = ledger.running().await?.into_iter().next();
    let queued = ledger.queued().await?;
    let docker = docker::connect().await?;
    let containers = docker::status::containers(&docker, &project).await?;
    Ok(Status {
        version: super::VERSION,
        project: project.to_string(),
        environment: root.env().to_string(),
        torn_down: ledger.torn_down().await?,
        live,
        running,
        queued,
        containers,
        backup: newest_backup(ledger, settings).await?,
        build_cache: BuildCache {
            // What runs matters more than the cache's size: a busy engine does not fail
            // `deploy status`.
            size: docker::cache::usage(&docker).await.ok(),
            limit: settings.build_cache,
        },
        notify_failure: ledger.last_notification_failure().await?,
        hostnames,
        certs_dir,
    })
}

/// The status for a person: the live deploy, the newest dump, the build cache, then a line
/// per container.
fn print(status: &Status, settings: &Settings) {
    println!("project  {}", status.project);
    print_environment(status);
    match &status.live {
        Some(d) => println!(
            "live     {} deployed by {} at {}",
            d.revision,
            d.user,
            d.finished_at
                .unwrap_or(d.started_at)
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
        ),
        None => println!("live     nothing deployed yet"),
    }
    print_queue(status);
    match &status.backup {
        Some(b) => println!(
            "backup   {} ago: {}{}",
            age(b.age_seconds),
            b.file,
            if b.overdue {
                "  (warning: older than backup_schedule allows)"
            } else {
                ""
            }
        ),
        None if settings.backup_schedule.is_some() => {
            println!("backup   none yet (warning: backup_schedule is set)")
        }
        None => {}
    }
    print_notify_failure(status);
    print_hostnames(status);
    let human = crate::compose::bytes::human;
    println!(
        "build    cache {} of at most {} (shared by every project on this engine)",
        status.build_cache.size.map_or("unknown".to_owned(), human),
        human(status.build_cache.limit)
    );
    if status.containers.is_empty() {
        println!("no containers");
    }
    let live = status.live.as_ref().map(|d| d.revision.to_string());
    for c in &status.containers {
        // Docker's first healthcheck may be minutes away; what `deploy status` checked itself
        // says so.
        let health = match (c.health.as_deref(), c.health_from) {
            (Some(h), Some("deploy")) => format!("{h}*"),
            (Some(h), _) => h.to_owned(),
            (None, _) => "-".to_owned(),
        };
        // A container a later revision kept (nothing it is made from changed) carries the
        // revision that created it, as its label says.
        let short = c.revision.get(..12).unwrap_or(&c.revision);
        let revision = match &live {
            Some(live) if !c.revision.is_empty() && *live != c.revision => {
                format!("unchanged since {short}")
            }
            _ => short.to_owned(),
        };
        println!(
            "  {:<12} {:<36} {:<10} {:<10} {revision}",
            c.service, c.name, c.state, health,
        );
    }
    if status
        .containers
        .iter()
        .any(|c| c.health_from == Some("deploy"))
    {
        println!("* Docker has not run its first healthcheck yet; `deploy status` ran it now");
    }
}

/// An environment other than production is named, and one torn down says so.
fn print_environment(status: &Status) {
    if status.environment != "production" {
        println!("env      {}", status.environment);
    }
    if let Some((at, by, why)) = &status.torn_down {
        println!(
            "torn down at {} by {by} ({why}); its history and build logs stay",
            at.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S")
        );
    }
}

/// Each hostname, and how it is served.
fn print_hostnames(status: &Status) {
    let dir = status
        .certs_dir
        .as_deref()
        .unwrap_or(std::path::Path::new(""));
    for (i, h) in status.hostnames.iter().enumerate() {
        let how = match (h.https, h.expires_in_days) {
            (true, Some(days)) if days < EXPIRY_WARNING_DAYS => {
                format!("https; warning: its certificate expires in {days} days")
            }
            (true, _) => "https".to_owned(),
            (false, _) => format!("http only: no certificate for it in {}", dir.display()),
        };
        let label = if i == 0 { "hosts" } else { "" };
        println!("{label:<8} {} ({how})", h.hostname);
    }
}

/// The deploy under way, with its stage, and those queued behind it.
fn print_queue(status: &Status) {
    let now = chrono::Utc::now();
    if let Some(d) = &status.running {
        println!(
            "running  {} {} by {}, {} in, at {}",
            d.id,
            d.revision.short(),
            d.user,
            age((now - d.started_at).num_seconds()),
            d.stage.as_deref().unwrap_or("the start")
        );
    }
    for d in &status.queued {
        println!(
            "queued   {} {} by {}, waiting {}",
            d.id,
            d.revision.short(),
            d.user,
            age((now - d.started_at).num_seconds())
        );
    }
}

/// The newest notification that failed, if none was delivered since.
fn print_notify_failure(status: &Status) {
    if let Some(f) = &status.notify_failure {
        let to = serde_json::from_value::<crate::notify::Receiver>(f.receiver.clone())
            .map_or_else(|_| f.receiver.to_string(), |r| r.to_string());
        println!(
            "notify   the `{}` event to {to} failed {} ago{}: {}",
            f.event,
            age((chrono::Utc::now() - f.at).num_seconds()),
            if f.given_up {
                ", given up"
            } else {
                ", retrying"
            },
            f.error
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ages_read_at_a_glance() {
        assert_eq!(super::age(42), "42s");
        assert_eq!(super::age(17 * 60 + 5), "17m");
        assert_eq!(super::age(5 * 3600 + 12 * 60), "5h12m");
        assert_eq!(super::age(3 * 86400 + 4 * 3600 + 60), "3d4h");
    }
}
