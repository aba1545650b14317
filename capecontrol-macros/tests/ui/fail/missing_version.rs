use capecontrol::prelude::*;

/// A test agent.
#[derive(Agent)]
#[agent(name = "T")]
struct T;

fn main() {}
