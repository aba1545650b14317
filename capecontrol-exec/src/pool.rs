//! Warm pools (pre-warmed agents): started containers that wait for their start message on stdin.
//! Each serves exactly one task and is then removed; a replacement is started in the background.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use capecontrol_core::manifest::Manifest;
use capecontrol_core::{Error, ErrorCategory, Result};

use crate::container::{Launcher, Prepared, Spec};
use crate::limits::manifest_wants_network;

pub(crate) struct WarmPool {
    key: String,
    size: usize,
    ready: Mutex<Vec<Prepared>>,
    pending: AtomicUsize,
    closed: AtomicBool,
    /// Set when the image is missing: refilling stops until a dispatch succeeds cold.
    broken: AtomicBool,
}

impl WarmPool {
    pub(crate) fn new(key: String, size: usize) -> Self {
        Self {
            key,
            size,
            ready: Mutex::new(Vec::new()),
            pending: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            broken: AtomicBool::new(false),
        }
    }

    pub(crate) fn ready(&self) -> usize {
        self.ready.lock().map_or(0, |r| r.len())
    }

    /// A ready container with the wanted network mode, if any.
    pub(crate) fn take(&self, network: bool) -> Option<Prepared> {
        let mut ready = self.ready.lock().ok()?;
        let at = ready.iter().position(|p| p.network == network)?;
        Some(ready.swap_remove(at))
    }

    /// Starts replacements in the background until the pool (ready and pending) is full.
    pub(crate) fn refill(self: &Arc<Self>, inner: &Arc<Launcher>, manifest: &Arc<Manifest>) {
        if self.closed.load(Ordering::SeqCst) || self.broken.load(Ordering::SeqCst) {
            return;
        }
        loop {
            let pending = self.pending.load(Ordering::SeqCst);
            if self.ready() + pending >= self.size {
                return;
            }
            if self
                .pending
                .compare_exchange(pending, pending + 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                continue;
            }
            let pool = Arc::clone(self);
            let inner2 = Arc::clone(inner);
            let manifest = Arc::clone(manifest);
            inner.tracker.spawn(async move {
                let made = pool.start_one(&inner2, &manifest).await;
                pool.pending.fetch_sub(1, Ordering::SeqCst);
                if let Err(e) = made {
                    tracing::warn!(pool = %pool.key, error = %e, "could not start a warm container");
                }
            });
        }
    }

    /// Fills the pool and waits for it; returns how many containers are ready.
    pub(crate) async fn fill_now(
        &self,
        inner: &Arc<Launcher>,
        manifest: &Manifest,
    ) -> Result<usize> {
        self.broken.store(false, Ordering::SeqCst);
        while self.ready() < self.size && !self.closed.load(Ordering::SeqCst) {
            self.start_one(inner, manifest).await?;
        }
        Ok(self.ready())
    }

    async fn start_one(&self, inner: &Arc<Launcher>, manifest: &Manifest) -> Result<()> {
        let spec = Spec {
            key: self.key.clone(),
            manifest,
            task_id: "warm".to_owned(),
            attempt: 0,
            network: manifest_wants_network(manifest),
        };
        let prepared = match inner.prepare(spec).await {
            Ok(p) => p,
            Err(e) => {
                if matches!(
                    e.category(),
                    ErrorCategory::NotFound | ErrorCategory::Validation
                ) {
                    self.broken.store(true, Ordering::SeqCst);
                }
                return Err(e);
            }
        };
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::conflict("warm pool closed"));
        }
        if let Ok(mut ready) = self.ready.lock() {
            ready.push(prepared);
        }
        Ok(())
    }

    /// Stops refilling and removes the ready containers.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Ok(mut ready) = self.ready.lock() {
            ready.clear();
        }
    }
}
