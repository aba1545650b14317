//! Policy types: [`Scope`] (`resource:action`), [`Principal`] and the scope check.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, FieldError};

/// A policy scope `resource:action`; the action may be `*` (every action on the resource).
///
/// Each part matches `[a-z][a-z0-9_-]*`.
///
/// ```
/// use capecontrol_core::Scope;
/// let granted: Scope = "finance:*".parse().unwrap();
/// assert!(granted.covers(&"finance:read".parse().unwrap()));
/// assert!(!granted.covers(&"payments:manage".parse().unwrap()));
/// assert!("Finance:read".parse::<Scope>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    resource: String,
    action: String,
}

/// Why a string is not a [`Scope`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid scope `{scope}`: {reason}")]
pub struct ScopeError {
    /// The string given.
    pub scope: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Scope {
    /// The resource part (`finance`).
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The action part (`read`, or `*`).
    pub fn action(&self) -> &str {
        &self.action
    }

    /// Whether the action is the wildcard `*`.
    pub fn is_wildcard(&self) -> bool {
        self.action == "*"
    }

    /// Whether holding `self` grants `required`: the same scope, or `resource:*` for it.
    pub fn covers(&self, required: &Scope) -> bool {
        self.resource == required.resource && (self.is_wildcard() || self.action == required.action)
    }
}

impl FromStr for Scope {
    type Err = ScopeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (resource, action) = capecontrol_rules::scope(s).map_err(|reason| ScopeError {
            scope: s.to_owned(),
            reason,
        })?;
        Ok(Self {
            resource: resource.to_owned(),
            action: action.to_owned(),
        })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.resource, self.action)
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses a list of scope strings, reporting each bad one at `pointer/index`.
pub fn parse_scopes<S: AsRef<str>>(pointer: &str, scopes: &[S]) -> Result<Vec<Scope>, Error> {
    let mut out = Vec::with_capacity(scopes.len());
    let mut errors = Vec::new();
    for (i, s) in scopes.iter().enumerate() {
        match s.as_ref().parse::<Scope>() {
            Ok(scope) => out.push(scope),
            Err(e) => errors.push(FieldError::new(format!("{pointer}/{i}"), e.to_string())),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(Error::validation("invalid scopes", errors))
    }
}

/// The scopes of `required` that no scope of `granted` covers, in the order required, without
/// duplicates.
///
/// ```
/// use capecontrol_core::{missing_scopes, Scope};
/// let s = |x: &str| x.parse::<Scope>().unwrap();
/// let granted = [s("finance:*"), s("profile:read")];
/// let required = [s("finance:write"), s("payments:manage"), s("profile:write")];
/// assert_eq!(missing_scopes(&granted, &required), vec![s("payments:manage"), s("profile:write")]);
/// ```
pub fn missing_scopes(granted: &[Scope], required: &[Scope]) -> Vec<Scope> {
    let mut missing: Vec<Scope> = Vec::new();
    for r in required {
        if !granted.iter().any(|g| g.covers(r)) && !missing.contains(r) {
            missing.push(r.clone());
        }
    }
    missing
}

/// The role that may do anything: manage every agent in the registry, read and act on every
/// task (see [`Platform`](crate::runtime::Platform)'s task API).
pub const ADMIN: &str = "admin";

/// The role that may create agents (and then manage the agents it created).
pub const PUBLISHER: &str = "publisher";

/// Who is acting: a user with roles and granted scopes, and where the request came from.
///
/// ```
/// use capecontrol_core::Principal;
/// let p = Principal::new("user-1").with_roles(["user"]).with_scopes(["finance:read"]).unwrap();
/// assert!(p.has_any_role(&["admin".to_string(), "user".to_string()]));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// The user's identifier.
    pub user_id: String,
    /// The user's roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Scopes the principal holds itself (an installation grants an agent its own scopes).
    #[serde(default)]
    pub scopes: Vec<Scope>,
    /// The client's IP address, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<IpAddr>,
    /// The client's user agent, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

impl Principal {
    /// A principal with no roles or scopes.
    pub fn new(user_id: impl Into<String>) -> Self {
        Self {
            user_id: user_id.into(),
            ..Self::default()
        }
    }

    /// Adds roles.
    pub fn with_roles<I, S>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.roles.extend(roles.into_iter().map(Into::into));
        self
    }

    /// Adds scopes, failing on the first that does not parse.
    pub fn with_scopes<I, S>(mut self, scopes: I) -> Result<Self, ScopeError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for s in scopes {
            self.scopes.push(s.as_ref().parse()?);
        }
        Ok(self)
    }

    /// Sets the client's IP address.
    pub fn with_ip(mut self, ip: IpAddr) -> Self {
        self.ip_address = Some(ip);
        self
    }

    /// Sets the client's user agent.
    pub fn with_user_agent(mut self, ua: impl Into<String>) -> Self {
        self.user_agent = Some(ua.into());
        self
    }

    /// Checks the bounds of what the caller sent about itself: the user id and the user agent
    /// are at most [`crate::store::MAX_USER_ID_BYTES`] and [`crate::store::MAX_USER_AGENT_BYTES`]
    /// (a validation error naming the field, never echoing its value).
    pub fn check(&self) -> Result<(), Error> {
        use crate::store::{MAX_USER_AGENT_BYTES, MAX_USER_ID_BYTES};
        if self.user_id.len() > MAX_USER_ID_BYTES {
            return Err(Error::invalid_field(
                "/principal/user_id",
                format!("the user id is longer than {MAX_USER_ID_BYTES} bytes"),
            ));
        }
        if self
            .user_agent
            .as_ref()
            .is_some_and(|u| u.len() > MAX_USER_AGENT_BYTES)
        {
            return Err(Error::invalid_field(
                "/principal/user_agent",
                format!("the user agent is longer than {MAX_USER_AGENT_BYTES} bytes"),
            ));
        }
        Ok(())
    }

    /// Whether the principal holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Whether the principal holds the [`ADMIN`] role.
    pub fn is_admin(&self) -> bool {
        self.has_role(ADMIN)
    }

    /// Whether the principal holds one of `roles` (true when `roles` is empty).
    pub fn has_any_role(&self, roles: &[String]) -> bool {
        roles.is_empty() || roles.iter().any(|r| self.roles.contains(r))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn s(x: &str) -> Scope {
        x.parse().unwrap()
    }

    #[test]
    fn scope_syntax() {
        for ok in ["finance:read", "a:*", "iot-meter:opt_in2", "x:y"] {
            assert!(ok.parse::<Scope>().is_ok(), "{ok}");
        }
        for bad in [
            "",
            "finance",
            ":read",
            "finance:",
            "Finance:read",
            "1a:read",
            "a:b:c",
            "a :b",
            "*:read",
            "a:*x",
            "a:Ä",
        ] {
            assert!(bad.parse::<Scope>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn wildcard_covers_only_its_resource() {
        assert!(s("finance:*").covers(&s("finance:write")));
        assert!(s("finance:*").covers(&s("finance:*")));
        assert!(!s("finance:read").covers(&s("finance:*")));
        assert!(!s("finance:*").covers(&s("financex:read")));
    }

    #[test]
    fn missing_scopes_is_exact_and_deduplicated() {
        let granted = [s("a:read")];
        let required = [s("a:read"), s("b:x"), s("b:x"), s("a:write")];
        assert_eq!(
            missing_scopes(&granted, &required),
            vec![s("b:x"), s("a:write")]
        );
        assert!(missing_scopes(&[s("a:*"), s("b:*")], &required).is_empty());
    }

    #[test]
    fn parse_scopes_reports_each_bad_index() {
        let err = parse_scopes("/permissions/scopes", &["a:b", "bad", "C:d"]).unwrap_err();
        let ptrs: Vec<_> = err
            .field_errors()
            .iter()
            .map(|e| e.pointer.as_str())
            .collect();
        assert_eq!(ptrs, ["/permissions/scopes/1", "/permissions/scopes/2"]);
    }

    proptest! {
        #[test]
        fn scope_display_round_trips(r in "[a-z][a-z0-9_-]{0,8}", a in "([a-z][a-z0-9_-]{0,8}|\\*)") {
            let text = format!("{r}:{a}");
            let scope: Scope = text.parse().unwrap();
            prop_assert_eq!(scope.to_string(), text);
        }

        #[test]
        fn scope_parse_never_panics(text in ".{0,40}") {
            let _ = text.parse::<Scope>();
        }

        #[test]
        fn missing_is_subset_of_required_and_uncovered(
            granted in proptest::collection::vec("[ab]:(x|y|\\*)", 0..4),
            required in proptest::collection::vec("[ab]:(x|y)", 0..5),
        ) {
            let g: Vec<Scope> = granted.iter().map(|x| s(x)).collect();
            let r: Vec<Scope> = required.iter().map(|x| s(x)).collect();
            let m = missing_scopes(&g, &r);
            for x in &m {
                prop_assert!(r.contains(x));
                prop_assert!(!g.iter().any(|gg| gg.covers(x)));
            }
            for x in &r {
                prop_assert!(m.contains(x) || g.iter().any(|gg| gg.covers(x)));
            }
        }
    }
}
