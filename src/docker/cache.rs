//! BuildKit's build cache (layers, cache mounts): how much it holds, and pruning it down to
//! the operator's `build_cache` after a deploy.
//!
//! The cache is the engine's, shared by every project it builds: the engine offers no way to
//! prune one project's part of it, so the prune keeps the most recently used records that
//! fit the limit, whoever made them. Records a running build holds are never pruned.

use bollard::query_parameters::PruneBuildOptions;

use super::{Docker, DockerError};

/// Bytes the build cache holds now, as `docker system df` counts them (records not shared
/// with images).
pub(crate) async fn usage(docker: &Docker) -> Result<u64, DockerError> {
    let df = super::raw::get_json(docker, "/system/df")
        .await
        .map_err(|why| DockerError::Raw {
            action: "read the size of the build cache".to_owned(),
            why,
        })?;
    Ok(cache_size(&df))
}

/// The build cache's size in a `/system/df` answer: API 1.41 lists its records
/// (`BuildCache`), newer engines add them up (`BuildCacheUsage`).
fn cache_size(df: &serde_json::Value) -> u64 {
    if let Some(total) = df["BuildCacheUsage"]["TotalSize"].as_u64() {
        return total;
    }
    df["BuildCache"]
        .as_array()
        .map(|records| {
            records
                .iter()
                .filter(|r| r["Shared"].as_bool() != Some(true))
                .filter_map(|r| r["Size"].as_u64())
                .sum()
        })
        .unwrap_or(0)
}

/// Removes the least recently used records until the cache holds at most `keep` bytes.
/// Returns the bytes reclaimed.
pub(crate) async fn prune(docker: &Docker, keep: u64) -> Result<u64, DockerError> {
    let keep = i64::try_from(keep).unwrap_or(i64::MAX);
    // API 1.41 engines read `keep-storage`, which bollard's options no longer name; newer
    // ones read `reserved-space`. Both are sent.
    let client = super::with_query(
        docker,
        "/build/prune",
        &[("keep-storage", keep.to_string())],
    );
    let options = PruneBuildOptions {
        reserved_space: Some(keep),
        ..Default::default()
    };
    let pruned = client
        .prune_build(Some(options))
        .await
        .map_err(|e| DockerError::api("prune the build cache", e))?;
    Ok(pruned
        .space_reclaimed
        .and_then(|b| u64::try_from(b).ok())
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_size_is_read_from_old_and_new_engines() {
        let old = serde_json::json!({"BuildCache": [
            {"Size": 100, "Shared": false},
            {"Size": 40, "Shared": true},
            {"Size": 2, "Shared": false},
        ]});
        assert_eq!(cache_size(&old), 102);
        let new = serde_json::json!({"BuildCacheUsage": {"TotalSize": 7}});
        assert_eq!(cache_size(&new), 7);
        assert_eq!(cache_size(&serde_json::json!({})), 0);
    }
}
