//! Resource limits and hardening: from a manifest's `config` and `permissions` to a Docker
//! `HostConfig`.

use std::collections::HashMap;

use bollard::models::{HostConfig, HostConfigLogConfig};
use capecontrol_core::manifest::{Config, Manifest};
use capecontrol_core::{Error, Scope, validate};

/// The scope an agent's manifest must ask for (and its installation grant) to get outbound
/// network access. Without it, a container runs with network mode `none` (loopback only).
pub const NETWORK_SCOPE: &str = "network:outbound";

/// A manifest's `memory_limit` in bytes, parsed by the same rules the registry validates
/// manifests with ([`validate::parse_memory_limit`]: `512MB`, `1.5GB`, `64MiB`; no space, units
/// case-sensitive), and at least [`Config::MIN_MEMORY_BYTES`]. A manifest the registry accepted
/// always passes; anything else is a validation error at `/config/memory_limit`.
pub(crate) fn memory_limit_bytes(text: &str) -> Result<u64, Error> {
    let bad = |why: &str| {
        Error::invalid_field(
            "/config/memory_limit",
            format!("`{text}` is not a memory limit: {why}"),
        )
    };
    let bytes = validate::parse_memory_limit(text).ok_or_else(|| {
        bad("expected a number and a unit (B, KB, MB, GB, KiB, MiB or GiB), like `512MB`")
    })?;
    if bytes < Config::MIN_MEMORY_BYTES {
        return Err(bad("below the 6 MB minimum"));
    }
    Ok(bytes)
}

/// A manifest's `cpu_limit` in cores ([`validate::parse_cpu_limit`]: a decimal string > 0,
/// like `"0.5"`) as Docker's nano-CPUs, capped at `max_cpus` (the engine's CPUs) and at least
/// 0.01 core.
pub(crate) fn cpu_limit_nanos(text: &str, max_cpus: f64) -> Result<i64, Error> {
    let cores = validate::parse_cpu_limit(text).ok_or_else(|| {
        Error::invalid_field(
            "/config/cpu_limit",
            format!("`{text}` is not a number of cores greater than 0, like `0.5`"),
        )
    })?;
    Ok(nanos(cores, max_cpus))
}

fn nanos(cores: f64, max_cpus: f64) -> i64 {
    (cores.min(max_cpus.max(0.01)).max(0.01) * 1e9) as i64
}

/// Whether `scopes` (manifest scopes or installation grants) cover [`NETWORK_SCOPE`].
pub(crate) fn covers_network<'a>(scopes: impl IntoIterator<Item = &'a Scope>) -> bool {
    let Ok(network) = NETWORK_SCOPE.parse::<Scope>() else {
        return false;
    };
    scopes.into_iter().any(|s| s.covers(&network))
}

/// Whether the manifest's permissions ask for outbound network access.
pub(crate) fn manifest_wants_network(manifest: &Manifest) -> bool {
    let scopes: Vec<Scope> = manifest
        .permissions()
        .scopes
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    covers_network(&scopes)
}

/// The limits and hardening every container gets, besides the manifest's own.
#[derive(Debug, Clone)]
pub(crate) struct Hardening {
    pub(crate) pids_limit: i64,
    pub(crate) user: String,
    pub(crate) tmpfs_size: String,
    pub(crate) default_memory: u64,
    pub(crate) default_cpus: f64,
    pub(crate) max_cpus: f64,
}

impl Hardening {
    /// The `HostConfig` of a container of `manifest`: limits plus hardening.
    pub(crate) fn host_config(
        &self,
        manifest: &Manifest,
        network: bool,
    ) -> Result<HostConfig, Error> {
        let config = manifest.config();
        let memory = match &config.memory_limit {
            Some(text) => memory_limit_bytes(text)?,
            None => self.default_memory,
        };
        let memory = i64::try_from(memory).unwrap_or(i64::MAX);
        let nano_cpus = match &config.cpu_limit {
            Some(text) => cpu_limit_nanos(text, self.max_cpus)?,
            None => nanos(self.default_cpus, self.max_cpus),
        };
        let tmpfs = HashMap::from([(
            "/tmp".to_owned(),
            format!("rw,noexec,nosuid,nodev,size={}", self.tmpfs_size),
        )]);
        Ok(HostConfig {
            memory: Some(memory),
            // Swap equal to memory: no swap at all.
            memory_swap: Some(memory),
            nano_cpus: Some(nano_cpus),
            pids_limit: Some(self.pids_limit),
            network_mode: Some(if network { "bridge" } else { "none" }.to_owned()),
            readonly_rootfs: Some(true),
            tmpfs: Some(tmpfs),
            cap_drop: Some(vec!["ALL".to_owned()]),
            // The engine's default seccomp profile stays on: only no-new-privileges is added.
            security_opt: Some(vec!["no-new-privileges".to_owned()]),
            privileged: Some(false),
            // Output goes over the attach stream only; nothing is kept in engine logs.
            log_config: Some(HostConfigLogConfig {
                typ: Some("none".to_owned()),
                config: None,
            }),
            auto_remove: Some(false),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_limits_follow_the_manifest_rules() {
        assert_eq!(memory_limit_bytes("512MB").unwrap(), 512_000_000);
        assert_eq!(memory_limit_bytes("1GiB").unwrap(), 1 << 30);
        assert_eq!(memory_limit_bytes("64MiB").unwrap(), 64 << 20);
        assert_eq!(memory_limit_bytes("1.5GB").unwrap(), 1_500_000_000);
        assert_eq!(memory_limit_bytes("6000KB").unwrap(), 6_000_000);
        // What the registry rejects, the executor rejects too.
        for bad in ["5MB", "12", "MB", "1TB", "64 MiB", "64mib", "-1GB", "lots"] {
            let e = memory_limit_bytes(bad).unwrap_err();
            assert_eq!(e.field_errors()[0].pointer, "/config/memory_limit", "{bad}");
            let manifest = serde_json::json!({"name": "x", "version": "1.0.0",
                "description": "x", "config": {"memory_limit": bad}});
            assert!(validate::check_manifest(&manifest).is_err(), "{bad}");
        }
        assert!(
            memory_limit_bytes("5MB")
                .unwrap_err()
                .to_string()
                .contains("6 MB minimum")
        );
    }

    #[test]
    fn cpu_limits_are_nano_cpus_capped_at_the_host() {
        assert_eq!(cpu_limit_nanos("0.5", 2.0).unwrap(), 500_000_000);
        assert_eq!(cpu_limit_nanos("8", 2.0).unwrap(), 2_000_000_000);
        assert_eq!(cpu_limit_nanos("0.001", 2.0).unwrap(), 10_000_000);
        for bad in ["0", "x", "-1", "1e3", " 1"] {
            let e = cpu_limit_nanos(bad, 2.0).unwrap_err();
            assert_eq!(e.field_errors()[0].pointer, "/config/cpu_limit", "{bad}");
        }
    }

    #[test]
    fn network_needs_the_scope() {
        let yes: Vec<Scope> = vec!["network:*".parse().unwrap()];
        let no: Vec<Scope> = vec!["finance:read".parse().unwrap()];
        assert!(covers_network(&yes));
        assert!(!covers_network(&no));
    }
}
