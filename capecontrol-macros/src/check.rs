//! The validation pass: every value written in the attributes, checked on the whole parsed
//! tree (after [`crate::attr`] read it and [`crate::ast`] checked its shape) and before
//! anything is expanded. The rules are [`crate::valid`]'s (that is, `capecontrol-rules`'); each
//! problem is one error at the literal's span, and all of them are reported at once.

use std::collections::BTreeSet;

use syn::LitStr;

use crate::ast::{Agent, AgentImpl};
use crate::attr::Errors;
use crate::valid;

/// A check of a string value.
type StrCheck = fn(&str) -> Result<(), String>;
/// A check of an integer value, returning it as a `u32`.
type IntCheck = fn(u64) -> Result<u32, String>;

/// Checks the values of `#[derive(Agent)]`'s `#[agent(...)]`.
pub(crate) fn agent(agent: &Agent, errors: &mut Errors) {
    let a = &agent.attrs;
    let each =
        |errors: &mut Errors, lit: Option<&LitStr>, check: &dyn Fn(&str) -> Result<(), String>| {
            if let Some(lit) = lit {
                errors.check(lit, check(&lit.value()));
            }
        };
    each(errors, a.name.as_ref(), &valid::name);
    each(errors, a.version.as_ref(), &valid::version);
    each(errors, a.description.as_ref(), &|s| {
        valid::not_blank("description", s)
    });
    each(errors, a.category.as_ref(), &|s| {
        valid::one_of("category", s, &valid::CATEGORIES).map(|_| ())
    });
    each(errors, a.placement.as_ref(), &|s| {
        valid::one_of("placement", s, &valid::PLACEMENTS).map(|_| ())
    });
    let mut unique = BTreeSet::new();
    for lit in &a.scopes {
        if errors.check(lit, valid::scope(&lit.value())).is_some() && !unique.insert(lit.value()) {
            errors.at(lit, format!("duplicate scope `{}`", lit.value()));
        }
    }
    for lit in &a.roles {
        errors.check(lit, valid::label("role", &lit.value()));
    }
    for lit in &a.data_access {
        errors.check(lit, valid::label("data_access entry", &lit.value()));
    }
    let ints: [(_, IntCheck); 4] = [
        (&a.timeout, valid::timeout),
        (&a.retries, valid::retries),
        (&a.concurrent_tasks, valid::concurrent_tasks),
        (&a.ask_timeout, valid::ask_timeout),
    ];
    for (lit, check) in ints {
        if let Some(lit) = lit {
            // `attr` only keeps literals that fit a u64.
            let n = lit.base10_parse::<u64>().unwrap_or(u64::MAX);
            errors.check(lit, check(n));
        }
    }
    each(errors, a.memory_limit.as_ref(), &valid::memory_limit);
    each(errors, a.cpu_limit.as_ref(), &valid::cpu_limit);
    let lists: [(&Vec<LitStr>, StrCheck); 3] = [
        (&a.events, valid::event),
        (&a.schedules, valid::cron),
        (&a.webhooks, valid::webhook),
    ];
    for (list, check) in lists {
        for lit in list {
            errors.check(lit, check(&lit.value()));
        }
    }
    each(errors, a.icon.as_ref(), &|s| valid::not_blank("icon", s));
    each(errors, a.color.as_ref(), &valid::color);
    each(errors, a.description_short.as_ref(), &|s| {
        valid::not_blank("description_short", s)
    });
    each(errors, a.image.as_ref(), &valid::image);
}

/// Checks the values of the `#[task(...)]` / `#[tool(...)]` methods of an `#[agent_impl]`.
pub(crate) fn agent_impl(agent: &AgentImpl, errors: &mut Errors) {
    for m in &agent.methods {
        let k = m.kind.as_str();
        match &m.attrs.name {
            Some(lit) => {
                errors.check(lit, valid::identifier(k, &lit.value()));
            }
            None => {
                errors.check(&m.ident, valid::identifier(k, &m.name));
            }
        }
        if let Some(lit) = &m.attrs.description {
            errors.check(lit, valid::not_blank("description", &lit.value()));
        }
        if let Some(lit) = &m.attrs.timeout {
            let n = lit.base10_parse::<u64>().unwrap_or(u64::MAX);
            errors.check(lit, valid::timeout(n));
        }
        if let Some(lit) = &m.attrs.scope {
            errors.check(lit, valid::scope(&lit.value()));
        }
    }
}
