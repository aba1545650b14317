//! The problem responses of the routes' OpenAPI operations: one [`IntoResponses`] type per set
//! of statuses a route can answer with a problem, so that each status is described once and a
//! route names its set (`responses((status = 200, …), Writes)`).
//!
//! Every set answers `application/problem+json` with the [`Problem`](super::Problem) schema.

use std::collections::BTreeMap;

use utoipa::IntoResponses;
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};

use super::problem::PROBLEM_JSON;

/// Each problem status and what it means, for every set below.
const STATUSES: &[(u16, &str)] = &[
    (400, "Invalid request (field errors at JSON pointers)"),
    (401, "No or an invalid API key"),
    (403, "Missing role or scopes"),
    (404, "Not found"),
    (409, "Conflicts with the current state"),
    (413, "Body over the limit"),
    (429, "Rate limited (see Retry-After)"),
    (503, "A dependency is unavailable"),
];

/// The problem responses of `statuses`, each described from [`STATUSES`].
fn problems(statuses: &[u16]) -> BTreeMap<String, RefOr<Response>> {
    statuses
        .iter()
        .map(|status| {
            let description = STATUSES
                .iter()
                .find(|(s, _)| s == status)
                .map_or("A problem", |(_, d)| d);
            let response = ResponseBuilder::new()
                .description(description)
                .content(
                    PROBLEM_JSON,
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build();
            (status.to_string(), RefOr::T(response))
        })
        .collect()
}

macro_rules! problem_set {
    ($(#[$meta:meta])* $name:ident = [$($status:literal),+]) => {
        $(#[$meta])*
        pub(crate) enum $name {}

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                problems(&[$($status),+])
            }
        }
    };
}

problem_set!(
    /// A route that changes something (or takes a body): every problem.
    Writes = [400, 401, 403, 404, 409, 413, 429, 503]
);
problem_set!(
    /// A read of one thing: a bad parameter, no key, not found, unavailable.
    Reads = [400, 401, 404, 503]
);
problem_set!(
    /// A filtered list: a bad query, no key, unavailable.
    Lists = [400, 401, 503]
);
problem_set!(
    /// A list without parameters: no key, unavailable.
    Unfiltered = [401, 503]
);
problem_set!(
    /// A health check: unavailable.
    Unavailable = [503]
);
