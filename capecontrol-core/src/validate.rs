//! Manifest validation: JSON Schema plus semantic rules, every problem reported at once.
//!
//! Not built yet: the foundation issue fills this module in.

use serde_json::Value;

use crate::error::{Error, FieldError};
use crate::manifest::Manifest;

/// Validates a manifest given as JSON, returning the typed manifest or every problem found.
pub fn validate_manifest(value: &Value) -> Result<Manifest, Vec<FieldError>> {
    serde_json::from_value(value.clone()).map_err(|e| vec![FieldError::new("", e.to_string())])
}

/// [`validate_manifest`] as an [`Error::Validation`].
pub fn check_manifest(value: &Value) -> Result<Manifest, Error> {
    validate_manifest(value).map_err(|errors| Error::validation("invalid manifest", errors))
}
