use capecontrol::prelude::*;

/// A test agent.
#[derive(Agent)]
#[agent(name = "T", version = "1.0.0")]
#[agent(version = "1.0.1")]
struct T;

fn main() {}
