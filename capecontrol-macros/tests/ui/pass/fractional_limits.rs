use capecontrol::prelude::*;

/// Fractional memory limits are accepted by the macro as by the manifest validator.
#[derive(Agent)]
#[agent(name = "Fractions", version = "1.0.0", memory_limit = "1.5GB", cpu_limit = "0.25")]
struct Fractions;

fn main() {
    let m = Fractions::metadata();
    let config = m.config.as_ref().unwrap();
    assert_eq!(config.memory_limit.as_deref(), Some("1.5GB"));
    assert_eq!(
        capecontrol::validate::parse_memory_limit("1.5GB"),
        Some(1_500_000_000)
    );
    assert!(capecontrol::validate::validate_manifest(&serde_json::to_value(&m).unwrap()).is_ok());
}
