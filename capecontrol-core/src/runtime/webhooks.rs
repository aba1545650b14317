//! Webhooks: a signed HTTP delivery starts an installation's task (see
//! [`triggers`](super::triggers) for which task, as whom, and the `task.triggered` audit row).
//!
//! # The signature
//!
//! Each installation has its own secret ([`Platform::rotate_webhook_secret`] makes a new one and
//! returns it; it is shown that once and stored as a secret, never listed, logged or audited).
//! A delivery carries:
//!
//! - a delivery id (1 to 128 bytes, unique per delivery: a repeat is a replay),
//! - a timestamp (Unix seconds) within [`TriggerConfig::webhook_tolerance`](super::triggers::TriggerConfig)
//!   of the node's clock,
//! - the signature `sha256=<hex>`: HMAC-SHA256, keyed by the secret, over
//!   `<timestamp>.<delivery id>.<raw body>`.
//!
//! Checks run in this order, and a delivery that fails one starts no task: the installation
//! exists and has a secret, the signature is right (else [`WebhookError::BadSignature`]), the
//! timestamp is in the window ([`WebhookError::Stale`]), the path is one of the installed
//! version's `triggers.webhooks` (`{id}` matching any one segment; else not-found), the delivery
//! id was not seen before ([`WebhookError::Replay`]), the body is JSON. Each rejection writes a
//! `webhook.rejected` audit row (the reason, never the signature or the secret).

use std::fmt;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde_json::{Value, json};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::platform::Platform;
use super::triggers::{self, Fired, TriggerSource};
use crate::error::{Error, Result};
use crate::policy::Principal;
use crate::store::triggers::MAX_DELIVERY_ID_BYTES;
use crate::store::{InstallationRecord, NewAuditEvent};

/// One webhook delivery, as received.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookDelivery {
    /// The installation it is for.
    pub installation_id: Uuid,
    /// The request path after the installation (`/payments`), matched against the manifest's
    /// `triggers.webhooks`.
    pub path: String,
    /// The sender's delivery id.
    pub delivery_id: String,
    /// When the sender signed it, Unix seconds.
    pub timestamp: i64,
    /// `sha256=<hex>`.
    pub signature: String,
    /// The raw body.
    pub body: Vec<u8>,
}

impl fmt::Debug for WebhookDelivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookDelivery")
            .field("installation_id", &self.installation_id)
            .field("path", &self.path)
            .field("delivery_id", &self.delivery_id)
            .field("timestamp", &self.timestamp)
            .field("body_bytes", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// Why a delivery started no task.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WebhookError {
    /// Unknown installation, no secret, or a signature that does not verify (HTTP 401).
    #[error("webhook signature does not verify")]
    BadSignature,
    /// The timestamp is outside the window (HTTP 401).
    #[error("webhook timestamp is outside the accepted window")]
    Stale,
    /// The delivery id was seen before (HTTP 409).
    #[error("webhook delivery `{0}` was already received")]
    Replay(String),
    /// Anything else: an unknown path (404), a body that is not JSON (400), the gateway's
    /// refusal, a store error.
    #[error(transparent)]
    Other(#[from] Error),
}

impl WebhookError {
    /// The HTTP status to answer with.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::BadSignature | Self::Stale => 401,
            Self::Replay(_) => 409,
            Self::Other(e) => e.http_status(),
        }
    }
}

/// A new installation webhook secret, shown once.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret {
    /// The installation.
    pub installation_id: Uuid,
    /// The secret (64 hex digits).
    pub secret: String,
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSecret")
            .field("installation_id", &self.installation_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// HMAC-SHA256 (RFC 2104) of `message` under `key` (the RustCrypto `hmac` crate).
pub fn hmac_sha256(key: &[u8], message: &[&[u8]]) -> [u8; 32] {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    for part in message {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The signature header a sender computes: `sha256=<hex>` of HMAC-SHA256 over
/// `<timestamp>.<delivery id>.<body>`.
pub fn sign(secret: &str, timestamp: i64, delivery_id: &str, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let mac = hmac_sha256(
        secret.as_bytes(),
        &[ts.as_bytes(), b".", delivery_id.as_bytes(), b".", body],
    );
    format!("sha256={}", hex(&mac))
}

/// Compares without an early exit on the first difference (`subtle`).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

impl Platform {
    /// Makes a new webhook secret for `by`'s installation of `agent` (replacing any) and
    /// returns it: the only time it is shown. Audited as `webhook.secret_rotated` (without it).
    pub async fn rotate_webhook_secret(
        &self,
        agent: &str,
        by: &Principal,
    ) -> Result<WebhookSecret> {
        let store = self.store();
        let agent = store.get_agent(agent).await?;
        let installation = store.get_installation(&agent.id, &by.user_id).await?;
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let secret = hex(&bytes);
        store.set_webhook_secret(installation.id, &secret).await?;
        store
            .append_audit(
                NewAuditEvent::by(
                    by,
                    "webhook.secret_rotated",
                    json!({"installation_id": installation.id}),
                )
                .agent(agent.id),
            )
            .await?;
        Ok(WebhookSecret {
            installation_id: installation.id,
            secret,
        })
    }

    /// Verifies a delivery and starts the installation's task with the body as input (see the
    /// module docs for the checks), at the node's clock.
    pub async fn deliver_webhook(
        &self,
        delivery: WebhookDelivery,
    ) -> std::result::Result<Fired, WebhookError> {
        self.deliver_webhook_at(delivery, Utc::now()).await
    }

    /// [`Platform::deliver_webhook`] with the clock's time given.
    pub async fn deliver_webhook_at(
        &self,
        delivery: WebhookDelivery,
        now: DateTime<Utc>,
    ) -> std::result::Result<Fired, WebhookError> {
        let (node, gateway) = self.parts();
        let store = &node.store;
        let installation = store
            .all_installations()
            .await?
            .into_iter()
            .find(|i| i.id == delivery.installation_id);
        let Some(installation) = installation else {
            return Err(self
                .reject(
                    None,
                    &delivery,
                    "unknown installation",
                    WebhookError::BadSignature,
                )
                .await);
        };
        let Some(secret) = store.webhook_secret(installation.id).await? else {
            return Err(self
                .reject(
                    Some(&installation),
                    &delivery,
                    "no secret",
                    WebhookError::BadSignature,
                )
                .await);
        };
        let expected = sign(
            &secret,
            delivery.timestamp,
            &delivery.delivery_id,
            &delivery.body,
        );
        if !constant_time_eq(expected.as_bytes(), delivery.signature.as_bytes()) {
            return Err(self
                .reject(
                    Some(&installation),
                    &delivery,
                    "bad signature",
                    WebhookError::BadSignature,
                )
                .await);
        }
        let tolerance =
            i64::try_from(node.config.triggers.webhook_tolerance.as_secs()).unwrap_or(i64::MAX);
        if now.timestamp().abs_diff(delivery.timestamp) > tolerance.unsigned_abs() {
            return Err(self
                .reject(
                    Some(&installation),
                    &delivery,
                    "stale timestamp",
                    WebhookError::Stale,
                )
                .await);
        }
        let manifest = node
            .manifest(&installation.agent_id, &installation.version)
            .await?;
        let Some(pattern) = manifest
            .triggers
            .iter()
            .flat_map(|t| t.webhooks.iter())
            .find(|p| capecontrol_rules::webhook_matches(p, &delivery.path))
            .cloned()
        else {
            let e = Error::not_found("webhook", delivery.path.clone());
            return Err(self
                .reject(Some(&installation), &delivery, "unknown path", e.into())
                .await);
        };
        if delivery.delivery_id.is_empty() || delivery.delivery_id.len() > MAX_DELIVERY_ID_BYTES {
            let e = Error::invalid_field(
                "/delivery_id",
                format!("must be 1 to {MAX_DELIVERY_ID_BYTES} bytes"),
            );
            return Err(self
                .reject(Some(&installation), &delivery, "delivery id", e.into())
                .await);
        }
        if !store
            .claim_delivery(installation.id, &delivery.delivery_id)
            .await?
        {
            let e = WebhookError::Replay(delivery.delivery_id.clone());
            return Err(self
                .reject(Some(&installation), &delivery, "replay", e)
                .await);
        }
        let input: Value = serde_json::from_slice(&delivery.body)
            .map_err(|e| Error::invalid_field("/body", format!("must be JSON: {e}")))?;
        let source = TriggerSource::Webhook {
            path: pattern,
            delivery_id: delivery.delivery_id.clone(),
        };
        let key = format!("webhook:{}:{}", installation.id, delivery.delivery_id);
        Ok(triggers::fire(node, gateway, &installation, &manifest, source, input, key).await)
    }

    /// Audits a rejected delivery and returns the error.
    async fn reject(
        &self,
        installation: Option<&InstallationRecord>,
        delivery: &WebhookDelivery,
        reason: &str,
        error: WebhookError,
    ) -> WebhookError {
        let user = installation.map_or("", |i| i.user_id.as_str());
        let by = Principal::new(user).with_user_agent("capecontrol-trigger/webhook");
        let mut event = NewAuditEvent::by(
            &by,
            "webhook.rejected",
            json!({"installation_id": delivery.installation_id, "path": delivery.path,
                   "delivery_id": delivery.delivery_id, "reason": reason,
                   "status": error.http_status()}),
        );
        if let Some(i) = installation {
            event = event.agent(i.agent_id.clone());
        }
        if let Err(e) = self.store().append_audit(event).await {
            tracing::warn!(error = %e, "could not audit a rejected webhook");
        }
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 4231 test cases 1, 2 and 6 (a key longer than the block).
    #[test]
    fn hmac_matches_rfc_4231() {
        let cases: [(&[u8], &[u8], &str); 3] = [
            (
                &[0x0b; 20],
                b"Hi There",
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                b"Jefe",
                b"what do ya want for nothing?",
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
        ];
        for (key, msg, mac) in cases {
            assert_eq!(hmac_sha256(key, &[msg]).to_vec(), unhex(mac));
        }
    }

    #[test]
    fn signatures_cover_timestamp_delivery_and_body() {
        let s = sign("k", 1, "d", b"{}");
        assert!(s.starts_with("sha256=") && s.len() == 7 + 64);
        assert_ne!(s, sign("k", 2, "d", b"{}"));
        assert_ne!(s, sign("k", 1, "e", b"{}"));
        assert_ne!(s, sign("k", 1, "d", b"[]"));
        assert_ne!(s, sign("l", 1, "d", b"{}"));
        assert!(constant_time_eq(
            s.as_bytes(),
            sign("k", 1, "d", b"{}").as_bytes()
        ));
    }
}
