//! Suggesting the next version of an agent from the difference of two manifests.

use semver::{BuildMetadata, Prerelease, Version};

use crate::manifest::Manifest;

/// How big a change between two manifests is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bump {
    /// Nothing a caller depends on changed.
    Patch,
    /// A tool was added.
    Minor,
    /// A tool was removed or a new scope is required.
    Major,
}

/// The size of the change from `prev` to `next`: a removed tool or a newly required scope is
/// major, an added tool minor, anything else a patch.
pub fn classify_change(prev: &Manifest, next: &Manifest) -> Bump {
    let prev_scopes = prev.permissions().scopes;
    let next_scopes = next.permissions().scopes;
    let removed_tool = prev.tools.iter().any(|t| !next.tools.contains(t));
    let new_scope = next_scopes.iter().any(|s| !prev_scopes.contains(s));
    if removed_tool || new_scope {
        return Bump::Major;
    }
    if next.tools.iter().any(|t| !prev.tools.contains(t)) {
        return Bump::Minor;
    }
    Bump::Patch
}

/// The version after `prev.version` for the change from `prev` to `next` (see
/// [`classify_change`]). A pre-release or build suffix is dropped; an unparsable previous
/// version counts as `0.0.0`.
///
/// ```
/// use capecontrol_core::Manifest;
/// use capecontrol_core::registry::suggest_next_version;
/// let m = |version: &str, tools: &[&str]| -> Manifest {
///     serde_json::from_value(serde_json::json!({
///         "name": "Finance", "version": version, "description": "Budgets", "tools": tools,
///     })).unwrap()
/// };
/// let prev = m("1.2.3", &["ingest"]);
/// assert_eq!(suggest_next_version(&prev, &m("1.2.3", &["ingest"])).to_string(), "1.2.4");
/// assert_eq!(suggest_next_version(&prev, &m("1.2.3", &["ingest", "report"])).to_string(), "1.3.0");
/// assert_eq!(suggest_next_version(&prev, &m("1.2.3", &[])).to_string(), "2.0.0");
/// ```
pub fn suggest_next_version(prev: &Manifest, next: &Manifest) -> Version {
    let base = Version::parse(&prev.version).unwrap_or_else(|_| Version::new(0, 0, 0));
    bump(&base, classify_change(prev, next))
}

/// `base` bumped by `by`.
pub(crate) fn bump(base: &Version, by: Bump) -> Version {
    let mut v = match by {
        Bump::Major => Version::new(base.major.saturating_add(1), 0, 0),
        Bump::Minor => Version::new(base.major, base.minor.saturating_add(1), 0),
        Bump::Patch if !base.pre.is_empty() => Version::new(base.major, base.minor, base.patch),
        Bump::Patch => Version::new(base.major, base.minor, base.patch.saturating_add(1)),
    };
    v.pre = Prerelease::EMPTY;
    v.build = BuildMetadata::EMPTY;
    v
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn manifest(version: &str, tools: &[&str], scopes: &[&str]) -> Manifest {
        serde_json::from_value(json!({
            "name": "A", "version": version, "description": "d", "tools": tools,
            "permissions": { "scopes": scopes },
        }))
        .unwrap()
    }

    #[test]
    fn bumps() {
        let prev = manifest("1.2.3", &["a", "b"], &["x:read"]);
        let same = manifest("9.9.9", &["b", "a"], &["x:read"]);
        assert_eq!(classify_change(&prev, &same), Bump::Patch);
        assert_eq!(suggest_next_version(&prev, &same), Version::new(1, 2, 4));
        let added = manifest("1.2.3", &["a", "b", "c"], &["x:read"]);
        assert_eq!(suggest_next_version(&prev, &added), Version::new(1, 3, 0));
        let removed = manifest("1.2.3", &["a"], &["x:read"]);
        assert_eq!(suggest_next_version(&prev, &removed), Version::new(2, 0, 0));
        let scoped = manifest("1.2.3", &["a", "b", "c"], &["x:read", "y:write"]);
        assert_eq!(suggest_next_version(&prev, &scoped), Version::new(2, 0, 0));
        let fewer_scopes = manifest("1.2.3", &["a", "b"], &[]);
        assert_eq!(classify_change(&prev, &fewer_scopes), Bump::Patch);
    }

    #[test]
    fn pre_releases_and_bad_versions() {
        let pre = manifest("2.0.0-rc.1+b5", &["a"], &[]);
        assert_eq!(
            suggest_next_version(&pre, &manifest("x", &["a"], &[])),
            Version::new(2, 0, 0)
        );
        assert_eq!(
            suggest_next_version(&pre, &manifest("x", &["a", "b"], &[])),
            Version::new(2, 1, 0)
        );
        let bad = manifest("not-semver", &[], &[]);
        assert_eq!(
            suggest_next_version(&bad, &manifest("x", &[], &[])),
            Version::new(0, 0, 1)
        );
    }
}
