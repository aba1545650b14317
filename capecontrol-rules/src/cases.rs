//! The table of values every implementation of the rules is tested against: the rules here,
//! `capecontrol-core`'s manifest validator (JSON Schema patterns plus semantic rules) and
//! `capecontrol-macros`' compile-time checks. A value is valid in all of them or in none.

/// Which manifest field a [`Case`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `name`.
    Name,
    /// `version`.
    Version,
    /// An entry of `permissions.scopes` (and a tool's `scope`).
    Scope,
    /// An entry of `permissions.required_roles` (and `permissions.data_access`).
    Role,
    /// A tool or task name.
    Identifier,
    /// `config.memory_limit`.
    MemoryLimit,
    /// `config.cpu_limit`.
    CpuLimit,
    /// An entry of `triggers.schedules`.
    Schedule,
    /// An entry of `triggers.events`.
    Event,
    /// An entry of `triggers.webhooks`.
    Webhook,
    /// `ui.color`.
    Color,
}

/// One value of one field, and whether it is valid.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// The field.
    pub field: Field,
    /// The value as written in a manifest or a macro attribute.
    pub value: &'static str,
    /// Whether every implementation accepts it.
    pub valid: bool,
}

const fn ok(field: Field, value: &'static str) -> Case {
    Case {
        field,
        value,
        valid: true,
    }
}

const fn bad(field: Field, value: &'static str) -> Case {
    Case {
        field,
        value,
        valid: false,
    }
}

use Field::*;

/// The table.
pub const CASES: &[Case] = &[
    ok(Name, "FinanceAgent"),
    ok(Name, "Cape AI Guide"),
    bad(Name, " "),
    bad(
        Name,
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    ),
    ok(Version, "1.2.0"),
    ok(Version, "1.0.0-rc.1+build.5"),
    bad(Version, "1.2"),
    bad(Version, "v1.2.3"),
    bad(Version, "01.2.3"),
    ok(Scope, "finance:read"),
    ok(Scope, "finance:*"),
    ok(Scope, "system-metrics:read_all"),
    bad(Scope, "finance"),
    bad(Scope, "Finance:read"),
    bad(Scope, "finance:"),
    bad(Scope, "*:read"),
    ok(Role, "user"),
    ok(Role, "Admin-2"),
    bad(Role, "2fa"),
    bad(Role, "a b"),
    ok(Identifier, "get_budget"),
    ok(Identifier, "_private"),
    bad(Identifier, "GetBudget"),
    bad(Identifier, "get-budget"),
    ok(MemoryLimit, "512MB"),
    ok(MemoryLimit, "6MB"),
    ok(MemoryLimit, "1.5GB"),
    ok(MemoryLimit, "0.5GiB"),
    ok(MemoryLimit, "64MiB"),
    bad(MemoryLimit, "5MB"),
    bad(MemoryLimit, "64 MiB"),
    bad(MemoryLimit, "512mb"),
    bad(MemoryLimit, "512"),
    bad(MemoryLimit, ".5GB"),
    bad(MemoryLimit, "5TB"),
    bad(MemoryLimit, "18446744073709551616B"),
    ok(CpuLimit, "0.5"),
    ok(CpuLimit, "2"),
    bad(CpuLimit, "0"),
    bad(CpuLimit, "0.0"),
    bad(CpuLimit, "-1"),
    bad(CpuLimit, "1e3"),
    bad(CpuLimit, ".5"),
    ok(Schedule, "0 9 * * MON"),
    ok(Schedule, "*/15 0-6 1,15 JAN-JUN mon-fri"),
    ok(Schedule, "30 23 L * *"),
    bad(Schedule, "0 25 * * *"),
    bad(Schedule, "0 9 * *"),
    bad(Schedule, "0 0 9 * * MON"),
    bad(Schedule, "@daily"),
    bad(Schedule, "* * * * FOO"),
    ok(Schedule, "CRON_TZ=Europe/Paris 30 2 * * *"),
    ok(Schedule, "CRON_TZ=America/New_York 0 9 * * MON"),
    bad(Schedule, "CRON_TZ=Mars/Olympus 0 9 * * *"),
    bad(Schedule, "CRON_TZ= 0 9 * * *"),
    bad(Schedule, "CRON_TZ=Europe/Paris 0 9 * *"),
    bad(Schedule, "CRON_TZ=Europe/Paris 0 0 9 * * *"),
    ok(Event, "payment.completed"),
    ok(Event, "energy.meter-reading.received"),
    bad(Event, "payment"),
    bad(Event, "Payment.completed"),
    bad(Event, "payment..completed"),
    ok(Webhook, "/api/agents/{id}/webhook"),
    ok(Webhook, "/hooks/a%2Fb"),
    bad(Webhook, "api/webhook"),
    bad(Webhook, "/hooks/{name}"),
    bad(Webhook, "/a b"),
    ok(Color, "#3B82F6"),
    ok(Color, "#fff"),
    bad(Color, "blue"),
    bad(Color, "#ffff"),
];

/// Whether the rules of this crate accept `value` for `field`.
pub fn accepts(field: Field, value: &str) -> bool {
    match field {
        Name => crate::name(value).is_ok(),
        Version => crate::version(value).is_ok(),
        Scope => crate::scope(value).is_ok(),
        Role => crate::label(value),
        Identifier => crate::identifier(value),
        MemoryLimit => crate::memory_limit(value).is_ok(),
        CpuLimit => crate::cpu_limit(value).is_ok(),
        Schedule => crate::cron(value).is_ok(),
        Event => crate::event(value),
        Webhook => crate::webhook(value),
        Color => crate::color(value),
    }
}
