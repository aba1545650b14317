//! The host's declared environment and the dependency check of a publish.

use std::collections::{BTreeMap, BTreeSet};

use semver::Version;

use crate::error::FieldError;
use crate::manifest::Dependencies;

/// What the host provides to agents: services, package versions and a language runtime.
///
/// A publish checks the manifest's `dependencies` against it.
///
/// ```
/// use capecontrol_core::registry::Environment;
/// let env = Environment::new()
///     .with_services(["postgresql", "redis"])
///     .with_package("fastapi", "0.110.2")
///     .with_python("3.11.4");
/// assert!(env.provides_service("redis"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment {
    services: BTreeSet<String>,
    packages: BTreeMap<String, String>,
    python: Option<String>,
}

impl Environment {
    /// An environment that provides nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a service (`redis`, `postgresql`).
    pub fn with_service(mut self, service: impl Into<String>) -> Self {
        self.services.insert(service.into());
        self
    }

    /// Adds services.
    pub fn with_services<I, S>(mut self, services: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.services.extend(services.into_iter().map(Into::into));
        self
    }

    /// Adds a package at a version (`"fastapi"`, `"0.110.2"`). Package names compare
    /// case-insensitively, with `_` and `-` alike.
    pub fn with_package(mut self, name: impl AsRef<str>, version: impl Into<String>) -> Self {
        self.packages
            .insert(normalize_package(name.as_ref()), version.into());
        self
    }

    /// Sets the language runtime's version (the manifest's `dependencies.python`).
    pub fn with_python(mut self, version: impl Into<String>) -> Self {
        self.python = Some(version.into());
        self
    }

    /// Whether the host provides `service`.
    pub fn provides_service(&self, service: &str) -> bool {
        self.services.contains(service)
    }

    /// The version of package `name`, if the host has it.
    pub fn package_version(&self, name: &str) -> Option<&str> {
        self.packages
            .get(&normalize_package(name))
            .map(String::as_str)
    }

    /// Every unmet dependency of `deps`, each at its JSON pointer (`/dependencies/services/0`).
    ///
    /// ```
    /// use capecontrol_core::manifest::Dependencies;
    /// use capecontrol_core::registry::Environment;
    /// let deps = Dependencies {
    ///     python: None,
    ///     packages: vec!["pydantic>=2,<3".into(), "fastapi>=0.104.0".into()],
    ///     services: vec!["redis".into()],
    /// };
    /// let env = Environment::new().with_package("pydantic", "2.5.0").with_package("fastapi", "0.100.0");
    /// let unmet: Vec<_> = env.unmet(&deps).into_iter().map(|e| e.pointer).collect();
    /// assert_eq!(unmet, ["/dependencies/packages/1", "/dependencies/services/0"]);
    /// ```
    pub fn unmet(&self, deps: &Dependencies) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if let Some(req) = &deps.python {
            let pointer = "/dependencies/python";
            match &self.python {
                None => errors.push(FieldError::new(
                    pointer,
                    format!("requires python {req}, but the host declares no python"),
                )),
                Some(have) => {
                    if let Err(message) = check_requirement("python", req, have) {
                        errors.push(FieldError::new(pointer, message));
                    }
                }
            }
        }
        for (i, spec) in deps.packages.iter().enumerate() {
            let pointer = format!("/dependencies/packages/{i}");
            let (name, req) = split_requirement(spec);
            if name.is_empty() {
                errors.push(FieldError::new(
                    pointer,
                    format!("`{spec}` does not name a package"),
                ));
                continue;
            }
            match self.package_version(name) {
                None => errors.push(FieldError::new(
                    pointer,
                    format!("package `{name}` is not available on the host"),
                )),
                Some(have) => {
                    if let Err(message) = check_requirement(name, req, have) {
                        errors.push(FieldError::new(pointer, message));
                    }
                }
            }
        }
        for (i, service) in deps.services.iter().enumerate() {
            if !self.provides_service(service) {
                errors.push(FieldError::new(
                    format!("/dependencies/services/{i}"),
                    format!("service `{service}` is not provided by the host"),
                ));
            }
        }
        errors
    }
}

fn normalize_package(name: &str) -> String {
    name.trim().to_lowercase().replace('_', "-")
}

/// Splits `fastapi[all]>=0.104.0` into the name `fastapi` and the requirement `>=0.104.0`.
fn split_requirement(spec: &str) -> (&str, &str) {
    let spec = spec.trim();
    let end = spec
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .unwrap_or(spec.len());
    let name = &spec[..end];
    let mut rest = spec[end..].trim_start();
    if rest.starts_with('[') {
        rest = rest.find(']').map_or("", |i| rest[i + 1..].trim_start());
    }
    (name, rest)
}

/// A version given with one to three numeric parts (`3`, `3.9`, `0.104.0`), padded to a SemVer.
/// Returns the version and how many parts were given.
fn parse_loose(text: &str) -> Option<(Version, usize)> {
    let text = text.trim().trim_start_matches('v');
    if let Ok(v) = Version::parse(text) {
        return Some((v, 3));
    }
    let parts: Vec<&str> = text.split('.').collect();
    if parts.is_empty() || parts.len() > 3 {
        return None;
    }
    let mut nums = [0u64; 3];
    for (i, p) in parts.iter().enumerate() {
        nums[i] = p.parse().ok()?;
    }
    Some((Version::new(nums[0], nums[1], nums[2]), parts.len()))
}

/// Checks `have` against a comma-separated requirement (`>=2,<3`, `==1.2.*`, `~=1.4`);
/// an empty requirement accepts any version.
fn check_requirement(name: &str, req: &str, have: &str) -> Result<(), String> {
    if req.trim().is_empty() {
        return Ok(());
    }
    let Some((have_v, _)) = parse_loose(have) else {
        return Err(format!(
            "the host's {name} version `{have}` is not a version that can be compared"
        ));
    };
    for clause in req.split(',') {
        let clause = clause.trim();
        let op_len = clause
            .find(|c: char| !matches!(c, '<' | '>' | '=' | '!' | '~' | '^'))
            .unwrap_or(clause.len());
        let (op, version) = (&clause[..op_len], clause[op_len..].trim());
        let ok = match op {
            "==" | "=" | "===" | "" if version.ends_with(".*") => {
                let prefix = version.trim_end_matches(".*");
                match parse_loose(prefix) {
                    Some((p, n)) => prefix_matches(&have_v, &p, n),
                    None => return Err(unparsable(name, clause)),
                }
            }
            "!=" if version.ends_with(".*") => {
                let prefix = version.trim_end_matches(".*");
                match parse_loose(prefix) {
                    Some((p, n)) => !prefix_matches(&have_v, &p, n),
                    None => return Err(unparsable(name, clause)),
                }
            }
            _ => {
                let Some((v, n)) = parse_loose(version) else {
                    return Err(unparsable(name, clause));
                };
                match op {
                    ">=" => have_v >= v,
                    ">" => have_v > v,
                    "<=" => have_v <= v,
                    "<" => have_v < v,
                    "==" | "=" | "===" => have_v == v,
                    "!=" => have_v != v,
                    // PEP 440 compatible release: `~=1.4` is `>=1.4, ==1.*`.
                    "~=" => have_v >= v && n >= 2 && prefix_matches(&have_v, &v, n - 1),
                    // SemVer tilde and caret.
                    "~" => have_v >= v && prefix_matches(&have_v, &v, n.min(2)),
                    "^" => {
                        have_v >= v
                            && semver::VersionReq::parse(&format!("^{version}"))
                                .is_ok_and(|r| r.matches(&have_v))
                    }
                    _ => return Err(unparsable(name, clause)),
                }
            }
        };
        if !ok {
            return Err(format!("requires {name} {req}, the host has {have}"));
        }
    }
    Ok(())
}

fn prefix_matches(have: &Version, prefix: &Version, parts: usize) -> bool {
    let a = [have.major, have.minor, have.patch];
    let b = [prefix.major, prefix.minor, prefix.patch];
    a[..parts.min(3)] == b[..parts.min(3)]
}

fn unparsable(name: &str, clause: &str) -> String {
    format!("cannot check the requirement `{clause}` on {name}: not a comparable version")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(req: &str, have: &str) -> bool {
        check_requirement("x", req, have).is_ok()
    }

    #[test]
    fn requirements() {
        assert!(check(">=0.104.0", "0.110.2"));
        assert!(!check(">=0.104.0", "0.100.0"));
        assert!(check(">=2,<3", "2.5.1"));
        assert!(!check(">=2,<3", "3.0.0"));
        assert!(check("==1.2.*", "1.2.9"));
        assert!(!check("==1.2.*", "1.3.0"));
        assert!(check("!=1.2.*", "1.3.0"));
        assert!(check("~=1.4", "1.9.0"));
        assert!(!check("~=1.4", "2.0.0"));
        assert!(check("~=1.4.5", "1.4.9"));
        assert!(!check("~=1.4.5", "1.5.0"));
        assert!(check("==3.11", "3.11.0"));
        assert!(check("^1.2", "1.9.0"));
        assert!(!check("^1.2", "2.0.0"));
        assert!(check("~1.2", "1.2.7"));
        assert!(!check("~1.2", "1.3.0"));
        assert!(check("", "anything"));
        assert!(!check(">=1.0", "not-a-version"));
        assert!(!check(">=1.0.0.0.1", "1.0.0"));
        assert!(!check("<>1", "1.0.0"));
        assert!(check(">3.9", "3.10"));
    }

    #[test]
    fn splits_names() {
        assert_eq!(
            split_requirement("fastapi>=0.104.0"),
            ("fastapi", ">=0.104.0")
        );
        assert_eq!(
            split_requirement("uvicorn[standard] >= 0.2"),
            ("uvicorn", ">= 0.2")
        );
        assert_eq!(split_requirement("redis"), ("redis", ""));
        assert_eq!(split_requirement(">=1"), ("", ">=1"));
    }

    #[test]
    fn unmet_lists_every_problem_at_its_pointer() {
        let deps = Dependencies {
            python: Some(">=3.9".into()),
            packages: vec!["Pydantic_Core>=2".into(), "missing".into(), ">=1".into()],
            services: vec!["redis".into(), "postgresql".into()],
        };
        let env = Environment::new()
            .with_service("postgresql")
            .with_package("pydantic-core", "2.1.0");
        let unmet: Vec<String> = env.unmet(&deps).into_iter().map(|e| e.pointer).collect();
        assert_eq!(
            unmet,
            [
                "/dependencies/python",
                "/dependencies/packages/1",
                "/dependencies/packages/2",
                "/dependencies/services/0"
            ]
        );
        let env = env.with_python("3.8.10");
        assert!(
            env.unmet(&deps)[0].message.contains("3.8.10"),
            "{:?}",
            env.unmet(&deps)
        );
        assert!(
            env.with_python("3.12").unmet(&deps)[0]
                .pointer
                .contains("packages")
        );
    }
}
