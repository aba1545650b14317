//! `MemoryStore`: the in-memory store (the embedded default and the test double).
//!
//! Not built yet: the registry issue (#4) fills this module in.
// TEMP-STUB (not committed)
#[derive(Debug, Default)]
pub struct MemoryStore;
impl MemoryStore {
    pub fn new() -> Self {
        Self
    }
}
