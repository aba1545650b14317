use capecontrol::prelude::*;

/// A test agent.
#[derive(Agent)]
#[agent(name = "T", version = "1.0.0", memory_limit = "5MB")]
struct T;

fn main() {}
