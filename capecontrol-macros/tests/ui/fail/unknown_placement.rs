use capecontrol::prelude::*;

/// A test agent.
#[derive(Agent)]
#[agent(name = "T", version = "1.0.0", placement = "sidebar")]
struct T;

fn main() {}
