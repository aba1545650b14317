//! Resource limits and hardening: from a manifest's `config` and `permissions` to a Docker
//! `HostConfig`.

use std::collections::HashMap;

use bollard::models::{HostConfig, HostConfigLogConfig};
use capecontrol_core::manifest::{Config, Manifest};
use capecontrol_core::{Error, Scope};

/// The scope an agent's manifest must ask for (and its installation grant) to get outbound
/// network access. Without it, a container runs with network mode `none` (loopback only).
pub const NETWORK_SCOPE: &str = "network:outbound";

/// Parses a memory limit such as `512MB` or `1GiB` into bytes.
///
/// `B`, `KB`, `MB`, `GB` are powers of 1000; `KiB`, `MiB`, `GiB` are powers of 1024 (units are
/// matched case-insensitively; a decimal number is allowed: `1.5GB`). A private stand-in for
/// `validate::parse_memory_limit`, which another branch adds to the core.
pub(crate) fn parse_memory_limit(text: &str) -> Result<u64, Error> {
    let bad = |why: &str| {
        Error::invalid_field(
            "/config/memory_limit",
            format!("`{text}` is not a memory limit: {why}"),
        )
    };
    let s = text.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| bad("expected a number and a unit, like `512MB`"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return Err(bad("the unit must be B, KB, MB, GB, KiB, MiB or GiB")),
    };
    let bytes = number * multiplier as f64;
    if !bytes.is_finite() || bytes > i64::MAX as f64 {
        return Err(bad("too large"));
    }
    let bytes = bytes as u64;
    if bytes < Config::MIN_MEMORY_BYTES {
        return Err(bad("below the 6 MB minimum"));
    }
    Ok(bytes)
}

/// Parses a CPU limit in cores (`"0.5"`) into Docker's nano-CPUs, capped at `max_cpus`.
pub(crate) fn parse_cpu_limit(text: &str, max_cpus: f64) -> Result<i64, Error> {
    let cores: f64 = text.trim().parse().map_err(|_| {
        Error::invalid_field(
            "/config/cpu_limit",
            format!("`{text}` is not a number of cores"),
        )
    })?;
    if !cores.is_finite() || cores <= 0.0 {
        return Err(Error::invalid_field(
            "/config/cpu_limit",
            format!("`{text}` must be greater than 0"),
        ));
    }
    let cores = cores.min(max_cpus.max(0.01)).max(0.01);
    Ok((cores * 1e9) as i64)
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
            Some(text) => parse_memory_limit(text)?,
            None => self.default_memory,
        };
        let memory = i64::try_from(memory).unwrap_or(i64::MAX);
        let nano_cpus = match &config.cpu_limit {
            Some(text) => parse_cpu_limit(text, self.max_cpus)?,
            None => (self.default_cpus.min(self.max_cpus).max(0.01) * 1e9) as i64,
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
    fn memory_units() {
        assert_eq!(parse_memory_limit("512MB").unwrap(), 512_000_000);
        assert_eq!(parse_memory_limit("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_memory_limit("64 MiB").unwrap(), 64 << 20);
        assert_eq!(parse_memory_limit("1.5GB").unwrap(), 1_500_000_000);
        assert_eq!(parse_memory_limit("6000KB").unwrap(), 6_000_000);
        assert!(parse_memory_limit("5MB").is_err());
        assert!(parse_memory_limit("12").is_err());
        assert!(parse_memory_limit("MB").is_err());
        assert!(parse_memory_limit("1TB").is_err());
        let e = parse_memory_limit("lots").unwrap_err();
        assert_eq!(e.field_errors()[0].pointer, "/config/memory_limit");
    }

    #[test]
    fn cpu_limits_are_nano_cpus_capped_at_the_host() {
        assert_eq!(parse_cpu_limit("0.5", 2.0).unwrap(), 500_000_000);
        assert_eq!(parse_cpu_limit("8", 2.0).unwrap(), 2_000_000_000);
        assert!(parse_cpu_limit("0", 2.0).is_err());
        assert!(parse_cpu_limit("x", 2.0).is_err());
    }

    #[test]
    fn network_needs_the_scope() {
        let yes: Vec<Scope> = vec!["network:*".parse().unwrap()];
        let no: Vec<Scope> = vec!["finance:read".parse().unwrap()];
        assert!(covers_network(&yes));
        assert!(!covers_network(&no));
    }
}
